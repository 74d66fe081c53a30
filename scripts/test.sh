#!/bin/sh
# The whole test suite: installs what is missing, builds, runs `make check` (unit, fuzz and mpirun
# tiers; the CUDA tier skips without a GPU).  Prints the failing logs on failure.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
if ! make -j"$(nproc)" check; then
    for f in $(find tests -name '*.log' ! -name test-suite.log); do
        if grep -q '^FAIL' "${f%.log}.trs" 2>/dev/null; then
            echo "===== $f"; tail -n 60 "$f"
        fi
    done
    exit 1
fi

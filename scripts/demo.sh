#!/bin/sh
# The main demo: installs what is missing, builds, then trains an MLP with mpirun on 4 ranks,
# dense against topk, quant and sign under LD_PRELOAD, and prints loss, accuracy, compression
# ratio and time for each.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
make -j"$(nproc)" examples/sqz_mlp_train >/dev/null
exec sh examples/run_demo.sh "$@"

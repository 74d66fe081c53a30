#!/bin/sh
# squeeze.DeviceGroup under PyTorch on one GPU: tests/cuda/device_group_torch.py (W ranks as
# threads with their own streams; replicas, sums, error feedback, reduce-scatter).
# Exits 77 (skip) unless a python3 imports torch and sees a GPU.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
set -u
: "${top_builddir:?top_builddir must be set (make check sets it)}"
: "${top_srcdir:?top_srcdir must be set}"
PY=
for p in ${PYTHON3:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 &&
        "$p" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
            >/dev/null 2>&1; then
        PY=$(command -v "$p")
        break
    fi
done
if [ -z "$PY" ]; then
    echo "SKIP: no python3 that imports torch and sees a GPU"
    exit 77
fi
for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so" \
    PYTHONPATH="$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    "$PY" "$top_srcdir/tests/cuda/device_group_torch.py"

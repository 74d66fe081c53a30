#!/bin/sh
# squeeze.DeviceGroup under PyTorch on one GPU: tests/cuda/device_group_torch.py (W ranks as
# threads with their own streams; replicas, sums, error feedback, reduce-scatter).
# Exits 77 (skip) unless a python3 imports torch and sees a GPU.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
set -u
: "${top_builddir:?top_builddir must be set (make check sets it)}"
: "${top_srcdir:?top_srcdir must be set}"
# shellcheck source=tests/cuda/torch_python.sh
. "$top_srcdir/tests/cuda/torch_python.sh"
for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so" \
    PYTHONPATH="$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    "$PY" "$top_srcdir/tests/cuda/device_group_torch.py"

#!/bin/sh
# squeeze.optim's DDP hook (register_ddp_hook) on 2 processes (gloo, CPU), the optimizers' Comm
# over mpi4py (tests/mpi/optim_ddp.py): averaged gradients in the dense steps, each rank's own in
# the others, identical replicas.  Skips (77) without a python3 that has an mpi4py of the MPI under
# test and PyTorch.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/mpi/common.sh"

if ! PY=$(mpi4py_python) || ! "$PY" -c "import torch.distributed" >/dev/null 2>&1; then
    echo "SKIP: no python3 with PyTorch and an mpi4py built for $MPI_IMPL"
    exit 77
fi
log="$TESTDIR/log"
# A sanitized build's library needs the ASan runtime loaded before it, and libstdc++ at start-up
# too: ASan resolves the C++ exception functions it intercepts when it starts, and PyTorch's
# threads throw (at shutdown) through a libstdc++ that Python would load only later.
asan_preload=
[ -z "${SQUEEZE_ASAN_RUNTIME:-}" ] || asan_preload="LD_PRELOAD=$(preload libstdc++.so.6)"
# shellcheck disable=SC2086 # PY_ENV and asan_preload are words
run_job $PY_ENV $asan_preload SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so" \
    PYTHONPATH="$top_srcdir/python" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    -np 2 "$PY" "$top_srcdir/tests/mpi/optim_ddp.py" >"$log" 2>&1
rc=$?
grep -E '^(PASS|FAIL|[A-Za-z]+Adam:)' "$log"
if [ "$rc" -ne 0 ]; then
    sed 's/^/   | /' "$log" | tail -n 30
    echo "FAIL: optim_ddp.py exited $rc"
    exit 1
fi
exit 0

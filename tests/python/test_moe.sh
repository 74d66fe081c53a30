#!/bin/sh
# squeeze.moe (the ctypes MoE calls over an mpi4py communicator, and the PyTorch autograd
# functions when torch is importable) under mpirun with 2 and 4 ranks ($MPI_TEST_RANKS;
# tests/python/moe_check.py).
# Skipped (77) when no python3 with numpy and an mpi4py of the MPI under test is installed (Debian's
# python3-mpi4py is Open MPI's); without torch only the numpy checks run.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/mpi/common.sh"

if ! PY=$(mpi4py_python); then
    echo "SKIP: no python3 with numpy and an mpi4py built for $MPI_IMPL"
    exit 77
fi
python_check_ranks "$PY" moe_check.py
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: squeeze.moe over mpi4py"
exit 0

#!/bin/sh
# squeeze.fsdp (FSDP2's custom reduce-scatter over a Squeeze Comm of host memory) under mpirun
# with 2 and 4 ranks ($MPI_TEST_RANKS; tests/python/fsdp_check.py): the calls as FSDP makes them,
# everywhere; a real fully_shard training run where PyTorch has FSDP2 (>= 2.6; Debian's 1.13 has
# not: that part prints SKIP).  PYTHON3 offers another interpreter (one with FSDP2), taken when
# its mpi4py belongs to the MPI under test.
# Skipped (77) when no python3 has numpy, torch and an mpi4py of the MPI under test.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/mpi/common.sh"

# (mpi4py_python checks that its mpi4py belongs to the MPI under test: Debian's is Open MPI's,
# whose ranks would start as singletons under MPICH's launcher.)
if ! PY=$(mpi4py_python) || ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "SKIP: no python3 with numpy, torch and an mpi4py built for $MPI_IMPL"
    exit 77
fi
python_check_ranks "$PY" fsdp_check.py
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: squeeze.fsdp over mpi4py"
exit 0

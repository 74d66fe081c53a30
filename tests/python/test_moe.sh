#!/bin/sh
# squeeze.moe (the ctypes MoE calls over an mpi4py communicator, and the PyTorch autograd
# functions when torch is importable) under mpirun with 2 and 4 ranks (tests/python/moe_check.py).
# Skipped (77) when no python3 with mpi4py and numpy is installed; without torch only the numpy
# checks run.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/mpi/common.sh"

PY=$(mpi4py_python) || { echo "SKIP: no python3 with mpi4py and numpy"; exit 77; }
if [ -z "${MPIRUN:-}" ] || ! command -v "$MPIRUN" >/dev/null 2>&1; then
    echo "SKIP: no mpirun"
    exit 77
fi
SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so"
export SQUEEZE_LIB
for np in 2 4; do
    echo "== $np ranks: $PY moe_check.py"
    # shellcheck disable=SC2046 # the flags are words
    timeout "$MPIRUN_TIMEOUT" "$MPIRUN" $(mpirun_flags) -np "$np" -x SQUEEZE_LIB \
        "$PY" "$top_srcdir/tests/python/moe_check.py" >"$TESTDIR/log$np" 2>&1
    rc=$?
    sed 's/^/   /' "$TESTDIR/log$np" | grep -E 'PASS|FAIL|SKIP|Error|error' | head -n 40
    [ "$rc" -eq 0 ] || bad "$np ranks: moe_check.py exited $rc"
done
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: squeeze.moe over mpi4py"
exit 0

#!/bin/sh
# A Python job: mpi4py + numpy under LD_PRELOAD with SQZ_METHOD=quant.  The float32 all-reduce is
# compressed and bit-identical on every rank, the int64 one exact (tests/mpi/mpi4py_allreduce.py).
# Skipped (77) when no Python with numpy and an mpi4py built for the MPI under test is installed
# (Debian's python3-mpi4py is built for Open MPI: under MPICH it skips).
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

if ! PY=$(mpi4py_python); then
    echo "SKIP: no python3 with numpy and an mpi4py built for $MPI_IMPL"
    exit 77
fi
SCRIPT="$top_srcdir/tests/mpi/mpi4py_allreduce.py"

for np in $MPI_TEST_RANKS; do
    dir="$TESTDIR/np$np"
    mkdir -p "$dir"
    echo "== $np ranks: $PY mpi4py_allreduce.py, SQZ_METHOD=quant SQZ_QUANT_BITS=4"
    # shellcheck disable=SC2086 # PY_ENV is words
    run_case "$dir/log" "$np" $PY_ENV SQZ_METHOD=quant SQZ_QUANT_BITS=4 \
        SQZ_STATS="json:$dir/s-%r.json" -- \
        "$PY" "$SCRIPT" --max-rel 0.2
    rc=$?
    grep -E '^(PASS|FAIL)' "$dir/log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "   (timed out after ${MPIRUN_TIMEOUT}s)"
        sed 's/^/   | /' "$dir/log" | tail -n 30
        bad "$np ranks: mpi4py_allreduce.py exited $rc"
        continue
    fi
    r=0
    while [ "$r" -lt "$np" ]; do
        f="$dir/s-$r.json"
        c=$( [ -f "$f" ] && json_get "$f" calls_compressed)
        if [ -z "$c" ] || [ "$c" -lt 2 ]; then
            bad "$np ranks: rank $r calls_compressed='$c' (expected >= 2: the two float32 all-reduces)"
        fi
        r=$((r + 1))
    done
    echo "   rank 0: calls_compressed $(json_get "$dir/s-0.json" calls_compressed)," \
        "calls_passthrough $(json_get "$dir/s-0.json" calls_passthrough)"
done

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: mpi4py's float32 all-reduce is compressed and bit-identical, int64 exact"
exit 0

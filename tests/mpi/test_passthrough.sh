#!/bin/sh
# Reductions that are not float SUMs on an intra-communicator at or above SQZ_MIN_BYTES (int,
# double, float MIN/MAX/PROD, a user-defined op, a derived datatype, an intercommunicator, a small
# float SUM...) must reach MPI untouched: exact results, and nothing compressed according to the
# stats, even with a lossy method selected.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

CHECK="$top_builddir/tests/mpi/mpi_allreduce_check"
[ -x "$CHECK" ] || { echo "missing $CHECK (make check builds it)"; exit 99; }

# passthrough_case NP METHOD [VAR=value ...]
passthrough_case() {
    np=$1 method=$2
    shift 2
    dir="$TESTDIR/$method-np$np"
    mkdir -p "$dir"
    echo "== $np ranks, SQZ_METHOD=$method $*"
    run_case "$dir/log" "$np" SQZ_METHOD="$method" "$@" SQZ_STATS="json:$dir/stats-%r.json" -- \
        "$CHECK" passthrough
    rc=$?
    grep -E '^(PASS|FAIL)' "$dir/log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "   (timed out after ${MPIRUN_TIMEOUT}s)"
        sed 's/^/   | /' "$dir/log" | tail -n 40
        bad "SQZ_METHOD=$method at $np ranks: mpi_allreduce_check passthrough exited $rc"
        return
    fi
    r=0
    while [ "$r" -lt "$np" ]; do
        f="$dir/stats-$r.json"
        if [ ! -f "$f" ]; then
            bad "SQZ_METHOD=$method at $np ranks: no stats file for rank $r"
        else
            c=$(json_get "$f" calls_compressed)
            fb=$(json_get "$f" calls_fallback)
            pt=$(json_get "$f" calls_passthrough)
            # Not compressed, and not even sent to the engine's dense fallback: passed through.
            if [ "$c" != 0 ] || [ "$fb" != 0 ]; then
                bad "SQZ_METHOD=$method at $np ranks: rank $r calls_compressed='$c' calls_fallback='$fb' (expected 0 and 0)"
                sed 's/^/   | /' "$f"
            elif [ -z "$pt" ] || [ "$pt" -le 0 ]; then
                bad "SQZ_METHOD=$method at $np ranks: rank $r calls_passthrough='$pt' (expected > 0)"
            elif [ "$r" -eq 0 ]; then
                echo "   rank 0: calls_compressed 0, calls_fallback 0, calls_passthrough $pt"
            fi
        fi
        r=$((r + 1))
    done
}

for np in $MPI_TEST_RANKS; do
    passthrough_case "$np" topk SQZ_TOPK_DENSITY=0.01
    passthrough_case "$np" quant SQZ_QUANT_BITS=2
done

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: every ineligible reduction passed through exactly"
exit 0

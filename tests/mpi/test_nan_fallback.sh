#!/bin/sh
# A NaN in one rank's gradient: that call goes dense on every rank (exactly what MPI gives, the NaN
# propagated where it was), the calls before and after it are compressed, the error-feedback
# residual comes out of the NaN call as it went in, nothing hangs or crashes, and every rank's
# stats count the non-finite fallback.  Checked for reduce-scatter methods (quant, sign) and an
# all-gather one (topk) at 2 and 4 ranks ($MPI_TEST_RANKS).
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

CHECK="$top_builddir/tests/mpi/mpi_allreduce_check"
[ -x "$CHECK" ] || { echo "missing $CHECK (make check builds it)"; exit 99; }

# nan_case NP LABEL MAXREL [VAR=value ...]
#   MAXREL bounds the relative error of the compressed calls, which carry the error-feedback
#   residual of the earlier calls on the same buffer (measured: quant 4 bits ~0.18, topk density
#   0.1 ~1.08, sign ~0.98 at the sixth call).
nan_case() {
    np=$1 label=$2 maxrel=$3
    shift 3
    dir="$TESTDIR/$label-np$np"
    mkdir -p "$dir"
    echo "== $label, $np ranks: $*"
    # keep-residual: a twin buffer runs the same calls without the NaN one and must end alike
    # (the methods below are deterministic: no stochastic rounding, no sampling).
    run_case "$dir/log" "$np" "$@" SQZ_STATS="json:$dir/stats-%r.json" -- \
        "$CHECK" nan "$maxrel" keep-residual
    rc=$?
    grep -E '^(PASS|FAIL)' "$dir/log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "   (timed out after ${MPIRUN_TIMEOUT}s: a hang)"
        sed 's/^/   | /' "$dir/log" | tail -n 40
        bad "$label at $np ranks: mpi_allreduce_check nan exited $rc"
        return
    fi
    r=0 stats_ok=1
    while [ "$r" -lt "$np" ]; do
        f="$dir/stats-$r.json"
        if [ ! -f "$f" ]; then
            bad "$label at $np ranks: no stats file for rank $r"
            stats_ok=0
            r=$((r + 1))
            continue
        fi
        nf=$(json_get "$f" calls_nonfinite)
        fb=$(json_get "$f" calls_fallback)
        c=$(json_get "$f" calls_compressed)
        # Every rank counts the fallback, not only the rank that held the NaN; the five other
        # calls of the loop and the five of the twin buffer were compressed.
        if [ -z "$nf" ] || [ "$nf" -lt 1 ] || [ -z "$fb" ] || [ "$fb" -lt 1 ] || [ "$c" != 10 ]; then
            bad "$label at $np ranks: rank $r calls_nonfinite='$nf' calls_fallback='$fb' calls_compressed='$c' (expected >= 1, >= 1, 10)"
            sed 's/^/   | /' "$f"
            stats_ok=0
        fi
        r=$((r + 1))
    done
    [ "$stats_ok" -eq 1 ] && echo "   stats of every rank: calls_nonfinite >= 1, calls_fallback >= 1, calls_compressed 10"
}

for np in $MPI_TEST_RANKS; do
    nan_case "$np" quant 0.3 SQZ_METHOD=quant SQZ_QUANT_BITS=4
    nan_case "$np" topk 1.3 SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.1 SQZ_EF=ef14
    nan_case "$np" sign 1.3 SQZ_METHOD=sign
done

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: a non-finite gradient falls back to the exact dense result on every rank"
exit 0

#!/bin/sh
# A job whose allocator moves its gradient buffers (every call at a new address, different on each
# rank): states must follow the buffers by their place in the call sequence, not by address.
# Checked per method: replicas identical, no call falls back, the state memory never exceeds twice
# the live set (one state per buffer of a step: what is held at the end), and error feedback
# still works (the error of the
# last steps within reach of the same job with buffers that never move).  The 1,000,000-call soak
# of docs/performance.md runs the same program (bench/soak.sh).
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

CHURN="$top_builddir/tests/mpi/mpi_churn"
[ -x "$CHURN" ] || { echo "missing $CHURN (make check builds it)"; exit 99; }
NP=4
CALLS=${CHURN_CALLS:-2500} # scripts/test.sh: 1000 in its MPICH and ASan passes
# One step: 70000, 3 x 20000 and 40000 floats (a size repeated inside the step); every method
# keeps at least one float of residual per element.
LIVE_FLOATS=170000

# tail_error LOG: the mean relative error of the last steps, from the program's summary line.
tail_error() { sed -n 's/.*tail rel error \([0-9.]*\).*/\1/p' "$1"; }

# churn_case LABEL MAXERR SIZES [VAR=value ...]: MAXERR bounds the tail error of the stable run
# (error feedback at work: one call's error is far larger for the low-bit methods, whose residuals
# cancel it over the steps); SIZES the buffers of a step ("" for the default step).
churn_case() {
    label=$1 maxerr=$2 sizes=$3
    shift 3
    dir="$TESTDIR/$label"
    mkdir -p "$dir"
    echo "== $label: $*"
    for mode in churn stable; do
        flag=""
        [ "$mode" = stable ] && flag="--stable"
        [ -n "$sizes" ] && flag="$flag --sizes $sizes"
        run_case "$dir/$mode.log" "$NP" "$@" SQZ_STATS="json:$dir/$mode-%r.json" -- \
            "$CHURN" --calls "$CALLS" $flag
        rc=$?
        grep '^churn:' "$dir/$mode.log" | sed 's/^/   /'
        if [ "$rc" -ne 0 ]; then
            sed 's/^/   | /' "$dir/$mode.log" | tail -n 20
            bad "$label ($mode): mpi_churn exited $rc"
            return
        fi
    done
    r=0
    while [ "$r" -lt "$NP" ]; do
        f="$dir/churn-$r.json"
        fb=$(json_get "$f" calls_fallback)
        peak=$(json_get "$f" state_bytes_peak)
        live=$(json_get "$f" state_bytes) # the steady state: one state per buffer of a step
        dropped=$(json_get "$f" residuals_dropped)
        if [ "$fb" != 0 ] || [ -z "$peak" ] || [ "$live" -lt $((4 * ${sizes:-$LIVE_FLOATS})) ] ||
            [ "$peak" -gt $((2 * live)) ]; then
            bad "$label: rank $r calls_fallback=$fb state_bytes_peak=$peak live set $live"
        fi
        [ "$r" = 0 ] && echo "   rank 0: calls_fallback $fb, state_bytes_peak $peak, live set $live, residuals_dropped $dropped"
        r=$((r + 1))
    done
    ec=$(tail_error "$dir/churn.log")
    es=$(tail_error "$dir/stable.log")
    if ! awk -v c="$ec" -v s="$es" -v m="$maxerr" 'BEGIN { exit !(c <= 1.25 * s + 0.005 && s <= m) }'; then
        bad "$label: tail error $ec with moving buffers, $es with stable ones (at most $maxerr)"
    fi
}

churn_case quant 0.2 "" SQZ_METHOD=quant SQZ_QUANT_BITS=4
churn_case topk 9 "" SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.01
churn_case sign 3 "" SQZ_METHOD=sign
churn_case quant-ef21 0.03 "" SQZ_METHOD=quant SQZ_QUANT_BITS=2 SQZ_EF=ef21
# One flat buffer reduced over and over (torch.cat of the gradients): learning must not keep a
# state per call.
churn_case quant-flat 0.2 200000 SQZ_METHOD=quant SQZ_QUANT_BITS=4

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: states follow moving buffers: identical replicas, no fallback, bounded memory"
exit 0

#!/bin/sh
# The acceptance check of the README on the example job: examples/sqz_mlp_train on 4 ranks under
# topk (density 0.1), quant (4 bits) and sign sends at most 0.25, 0.16 and 0.05 of the gradient
# bytes (bytes_wire / bytes_in of every rank's JSON stats), every rank writes its stats file,
# and the replicas stay bit-identical; adaptive PowerSGD (SQZ_ADAPT=lgreco) sends no more than the
# uniform rank, probing calls included.  SQZ_STATS=summary prints one table, on rank 0 only.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

TRAIN="$top_builddir/examples/sqz_mlp_train"
[ -x "$TRAIN" ] || { echo "missing $TRAIN (make builds it)"; exit 99; }
NP=4
STEPS=60 # the ratio does not depend on the length of the run

# A JSON checker when a Python is at hand (the files are also read with sed by json_get).
PY=
for p in ${PYTHON3:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import json' >/dev/null 2>&1; then
        PY=$p
        break
    fi
done

# ratio_case LABEL METHOD MAX_RATIO [VAR=value ...]
ratio_case() {
    label=$1 method=$2 max=$3
    shift 3
    dir="$TESTDIR/$label"
    mkdir -p "$dir"
    echo "== $label: $NP ranks, $STEPS steps, SQZ_METHOD=$method $* (bytes_wire/bytes_in <= $max)"
    run_case "$dir/log" "$NP" SQZ_METHOD="$method" "$@" SQZ_STATS="json:$dir/s-%r.json" -- \
        "$TRAIN" --steps "$STEPS"
    rc=$?
    grep -E '^(final|test|wall|replicas)' "$dir/log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "   (timed out after ${MPIRUN_TIMEOUT}s)"
        sed 's/^/   | /' "$dir/log" | tail -n 30
        bad "$label: sqz_mlp_train exited $rc"
        return
    fi
    if ! grep -q '^replicas: identical$' "$dir/log"; then
        bad "$label: the training output does not say 'replicas: identical'"
    fi
    r=0
    while [ "$r" -lt "$NP" ]; do
        f="$dir/s-$r.json"
        if [ ! -f "$f" ]; then
            bad "$label: rank $r wrote no stats file ($f)"
            r=$((r + 1))
            continue
        fi
        if [ -n "$PY" ] && ! "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$f"; then
            bad "$label: rank $r stats are not valid JSON"
            sed 's/^/   | /' "$f"
        fi
        grep -q "\"rank\": $r," "$f" || bad "$label: $f does not say rank $r"
        grep -q "\"method\": \"$method\"" "$f" || bad "$label: $f does not say method $method"
        bin=$(json_get "$f" bytes_in)
        bwire=$(json_get "$f" bytes_wire)
        c=$(json_get "$f" calls_compressed)
        # One gradient all-reduce per step, all compressed (no warm-up by default).
        if [ "$c" != "$STEPS" ]; then
            bad "$label: rank $r calls_compressed='$c' (expected $STEPS, one per step)"
        fi
        if [ -z "$bin" ] || [ -z "$bwire" ] || [ "$bin" = 0 ]; then
            bad "$label: rank $r bytes_in='$bin' bytes_wire='$bwire'"
            r=$((r + 1))
            continue
        fi
        ratio=$(awk -v w="$bwire" -v i="$bin" 'BEGIN { printf "%.4f", w / i }')
        if awk -v w="$bwire" -v i="$bin" -v m="$max" 'BEGIN { exit !(w > 0 && w / i <= m) }'; then
            echo "   ok: rank $r bytes_wire/bytes_in = $bwire/$bin = $ratio <= $max"
        else
            bad "$label: rank $r bytes_wire/bytes_in = $bwire/$bin = $ratio, not in (0, $max]"
        fi
        r=$((r + 1))
    done
}

ratio_case topk topk 0.25 SQZ_TOPK_DENSITY=0.1
ratio_case quant quant 0.16 SQZ_QUANT_BITS=4
ratio_case sign sign 0.05

# L-GreCo's probes send nothing: an adaptive PowerSGD run (SQZ_ADAPT=lgreco, a probe every 10
# steps) sends at most the bytes of the same run at the uniform rank, probing calls included.
# wire_bytes LABEL [VAR=value ...]: rank 0's bytes_wire after the run, or nothing.
wire_bytes() {
    label=$1
    shift
    dir="$TESTDIR/$label"
    mkdir -p "$dir"
    run_case "$dir/log" "$NP" SQZ_METHOD=powersgd SQZ_POWERSGD_RANK=4 SQZ_LAYOUT="$LAYOUT" "$@" \
        SQZ_STATS="json:$dir/s-%r.json" -- "$TRAIN" --steps "$STEPS" >/dev/null 2>&1 ||
        { sed 's/^/   | /' "$dir/log" | tail -n 20 >&2; return; }
    json_get "$dir/s-0.json" bytes_wire
}
# (absolute: the ranks do not run in this directory, and top_srcdir may be relative)
LAYOUT=$(cd "$top_srcdir/examples/layouts" && pwd)/sqz_mlp_train.layout
echo "== PowerSGD rank 4: adaptive (SQZ_ADAPT=lgreco) against uniform bytes, $NP ranks"
uni=$(wire_bytes psgd-uniform)
ada=$(wire_bytes psgd-lgreco SQZ_ADAPT=lgreco SQZ_ADAPT_PERIOD=10)
if [ -n "$uni" ] && [ -n "$ada" ] && [ "$ada" -le "$uni" ]; then
    echo "   ok: $ada bytes adaptive <= $uni uniform (rank 0, probes included)"
else
    bad "adaptive PowerSGD sent '$ada' bytes against '$uni' at the uniform rank"
fi

# SQZ_STATS=summary: one table, printed by rank 0.
echo "== SQZ_STATS=summary, SQZ_METHOD=quant, $NP ranks"
log="$TESTDIR/summary.log"
run_case "$log" "$NP" SQZ_METHOD=quant SQZ_STATS=summary -- "$TRAIN" --steps 20
rc=$?
if [ "$rc" -ne 0 ]; then
    bad "summary: sqz_mlp_train exited $rc"
    sed 's/^/   | /' "$log" | tail -n 30
else
    n=$(grep -c "^squeeze: summary over $NP rank(s)" "$log")
    rows=$(grep -c '^quant ' "$log")
    if [ "$n" -eq 1 ] && [ "$rows" -eq 1 ]; then
        echo "   ok: one summary (rank 0's), with one row for quant:"
        sed -n '/^squeeze: summary/,/^quant /p' "$log" | sed 's/^/   | /'
    else
        bad "summary: $n summary header(s) and $rows quant row(s), expected 1 and 1"
        sed 's/^/   | /' "$log" | tail -n 30
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: compression ratios within the README's bounds, stats on every rank"
exit 0

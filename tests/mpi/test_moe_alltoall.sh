#!/bin/sh
# MoE token all-to-alls under the interposer (SQZ_MOE=cycle, SQZ_MOE_CYCLE=dedup,lsh,
# SQZ_MOE_DIM=16): non-token all-to-alls pass through exactly and are counted; token calls are
# de-duplicated (bit-exact) or LSH-coded (close) in turn, as the stats record.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

CHECK="$top_builddir/tests/mpi/mpi_alltoall_check"
[ -x "$CHECK" ] || { echo "missing $CHECK (make check builds it)"; exit 99; }

# moe_codec FILE CODEC FIELD: a number of the codec's row in the stats' "moe" object.
moe_codec() {
    sed -n "s/.*\"$2\": {.*\"$3\": \([0-9.e+-]*\).*/\1/p" "$1" | head -n 1
}

for np in $MPI_TEST_RANKS; do
    dir="$TESTDIR/np$np"
    mkdir -p "$dir"
    echo "== $np ranks"
    run_case "$dir/log" "$np" SQZ_MOE=cycle SQZ_MOE_CYCLE=dedup,lsh SQZ_MOE_DIM=16 \
        SQZ_STATS="json:$dir/stats-%r.json" -- "$CHECK"
    rc=$?
    sed 's/^/   /' "$dir/log" | grep -E 'PASS|FAIL|LSH' 
    if [ "$rc" -ne 0 ]; then
        sed 's/^/   | /' "$dir/log" | tail -n 30
        bad "$np ranks: mpi_alltoall_check exited $rc"
        continue
    fi
    f="$dir/stats-0.json"
    pt=$(sed -n 's/^    "calls_passthrough": \([0-9]*\),*$/\1/p' "$f")
    dd=$(moe_codec "$f" dedup calls)
    ls=$(moe_codec "$f" lsh calls)
    rate=$(moe_codec "$f" lsh compression_rate)
    echo "   rank 0: moe passthrough $pt, dedup calls $dd, lsh calls $ls (rate $rate)"
    [ "$pt" = 5 ] || bad "$np ranks: moe calls_passthrough '$pt', expected 5 (int, double, 5 floats, in place, -v)"
    [ "$dd" = 2 ] || bad "$np ranks: dedup calls '$dd', expected 2"
    [ "$ls" = 1 ] || bad "$np ranks: lsh calls '$ls', expected 1"
done

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: token all-to-alls coded, the others passed through exactly"
exit 0

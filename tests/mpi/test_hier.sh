# Hierarchical all-reduce (SQZ_HIER) on an emulated 2-host cluster with 2 ranks per host:
# every rank ends bit-identical, only the host leaders run the compressed exchange, and with
# SQZ_HIER=off every rank does.  Skips (77) where network namespaces are not allowed (or
# bench/netcluster cannot build the cluster).
. "$top_srcdir/tests/mpi/common.sh"
prog="$top_builddir/tests/mpi/mpi_allreduce_check"
[ -x "$prog" ] || fail "missing $prog"
[ "$(id -u)" = 0 ] || { echo "SKIP: not root"; exit 77; }
ip netns add "sqzhier$$" 2>/dev/null || { echo "SKIP: network namespaces not allowed"; exit 77; }
ip netns del "sqzhier$$"
if [ "$MPI_IMPL" = mpich ]; then
    # tests/mpi/test_netcluster.sh, step 5: jobs across emulated hosts can hang in MPI_Finalize.
    echo "SKIP: MPICH 4.0's UCX can hang in MPI_Finalize over TCP (bench/netcluster across hosts)"
    exit 77
fi

# cluster PROGRAM [ARGS...]: 2 hosts x 2 ranks, the interposer preloaded in the ranks only.
cluster() {
    timeout 150 "$top_srcdir/bench/netcluster" --hosts 2 --ranks-per-host 2 --rate 1gbit \
        --timeout 120 --env LD_PRELOAD="$(preload "$SQZ_LIB")" -- "$@"
}

export SQZ_METHOD=quant SQZ_QUANT_BITS=8
for mode in auto off; do
    out="$TESTDIR/hier-$mode"
    SQZ_HIER=$mode SQZ_STATS="json:$out-%r.json" cluster "$prog" bitident 0.05 >"$out.log" 2>&1
    rc=$?
    if [ "$rc" -eq 77 ]; then
        cat "$out.log"
        echo "SKIP: bench/netcluster cannot build the cluster here"
        exit 77
    fi
    if [ "$rc" -ne 0 ]; then
        cat "$out.log"
        fail "SQZ_HIER=$mode: mpi_allreduce_check bitident failed"
    fi
    grep -q '(4 rank(s))' "$out.log" || { cat "$out.log"; fail "SQZ_HIER=$mode: not one 4-rank job"; }
    for r in 0 1 2 3; do
        [ -f "$out-$r.json" ] || { cat "$out.log"; fail "SQZ_HIER=$mode: no stats from rank $r"; }
        c=$(json_get "$out-$r.json" calls_compressed)
        echo "SQZ_HIER=$mode rank $r: calls_compressed=$c"
        if [ "$mode" = auto ] && [ "$r" = 1 -o "$r" = 3 ]; then
            # Non-leaders compress only the reduce-scatters (not hierarchical); the all-reduces
            # are compressed by their host leader.
            lead=$(json_get "$out-$((r - 1)).json" calls_compressed)
            [ "$c" -lt "$lead" ] || fail "rank $r (not a leader) compressed $c calls, its leader $lead"
        else
            [ "$c" -gt 0 ] || fail "rank $r compressed nothing with SQZ_HIER=$mode"
        fi
    done
done
echo "PASS: hierarchical all-reduce bit-identical on 2 hosts x 2 ranks"

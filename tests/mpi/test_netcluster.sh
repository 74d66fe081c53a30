#!/bin/sh
# bench/netcluster: a 2-host emulated cluster (network namespaces + bridge, tc tbf at 1gbit) runs
# a 2-rank job with one rank per host, each rank on its own address of the private subnet and
# talking to the other over it; the links are shaped; the namespaces are gone afterwards, also
# after a failing job and after --timeout.  Skips (77) without root or network namespaces.  Runs
# under Open MPI's mpirun and MPICH's hydra mpiexec ($MPIRUN, $MPI_IMPL: scripts/mpi_launch.sh);
# every MPI program checks that it ran in one world of 2 ranks.  Under MPICH it skips (77) before
# the MPI programs (step 5), once the steps without MPI traffic have passed.
set -u
: "${top_srcdir:?top_srcdir must be set (make check sets it)}"
: "${top_builddir:?top_builddir must be set}"
. "$top_srcdir/scripts/mpi_launch.sh"

NC="$top_srcdir/bench/netcluster"
SUBNET=10.77.0
PREFIX="sqzt$$"                         # namespaces $PREFIX-h0, $PREFIX-h1, $PREFIX-br

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "netcluster needs root"
for c in ip tc bash "${MPIRUN:-mpirun}"; do
    command -v "$c" >/dev/null 2>&1 || skip "no $c in PATH"
done
mpi_launch_init || exit 99
if ! ip netns add "$PREFIX-probe" 2>/dev/null; then
    skip "'ip netns add' is not permitted here"
fi
ip netns del "$PREFIX-probe"

TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/sqz-netcluster.XXXXXX")
# shellcheck disable=SC2317   # called by the trap
cleanup() {
    # Whatever happened, leave no namespace behind.
    bash "$NC" --teardown --name "$PREFIX" >/dev/null 2>&1
    rm -rf "$TESTDIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# netc ARGS...: runs netcluster on the test's namespaces, 2 hosts at 1gbit, 20 s at most.
netc() {
    bash "$NC" --name "$PREFIX" --hosts 2 --rate 1gbit --timeout 20 "$@"
}

# Our namespaces that still exist.
leftovers() {
    ip netns list | awk '{ print $1 }' | grep "^$PREFIX-" || true
}

check_clean() {
    left=$(leftovers)
    [ -z "$left" ] || fail "namespaces left after $1: $left"
}

# --- 1. Each rank in its own host: address and hostname, one line per rank -----------------------
# The launcher's rank variable and its flag that tags the output lines with the rank.
tag=--tag-output
[ "$MPI_IMPL" = openmpi ] || tag=-prepend-rank
# shellcheck disable=SC2016   # expanded by the ranks
netc --mpirun-args "$tag" -- sh -c \
    'echo "rank ${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-}} addr $(ip -4 -o addr show dev eth0 | awk "{ print \$4 }") host $(cat /proc/sys/kernel/hostname)"' \
    >"$TESTDIR/where.out" 2>"$TESTDIR/where.err"
rc=$?
cat "$TESTDIR/where.out" "$TESTDIR/where.err"
[ $rc -ne 77 ] || skip "netcluster refused to build the cluster"
[ $rc -eq 0 ] || fail "2-host job exited $rc"
grep -q "^netcluster: cluster: 2 hosts x 1 ranks" "$TESTDIR/where.err" ||
    fail "no cluster description line"
addr0=$(sed -n 's/.*rank 0 addr \([0-9.]*\)\/24 .*/\1/p' "$TESTDIR/where.out")
addr1=$(sed -n 's/.*rank 1 addr \([0-9.]*\)\/24 .*/\1/p' "$TESTDIR/where.out")
host0=$(sed -n 's/.*rank 0 addr .* host \(.*\)$/\1/p' "$TESTDIR/where.out")
host1=$(sed -n 's/.*rank 1 addr .* host \(.*\)$/\1/p' "$TESTDIR/where.out")
case $addr0 in "$SUBNET".*) ;; *) fail "rank 0 has no address in $SUBNET.0/24: '$addr0'" ;; esac
case $addr1 in "$SUBNET".*) ;; *) fail "rank 1 has no address in $SUBNET.0/24: '$addr1'" ;; esac
[ "$addr0" != "$addr1" ] || fail "both ranks on the same address $addr0"
if [ -z "$host0" ] || [ "$host0" = "$host1" ]; then
    fail "ranks not on distinct hosts: '$host0' '$host1'"
fi
echo "ok: rank 0 on $host0 ($addr0), rank 1 on $host1 ($addr1)"
check_clean "a successful job"

# --- 2. The links are shaped: tbf at 1gbit on both sides of each veth, with the queue --queue
# asks for (--keep, then --teardown) ----------------------------------------------------------
netc --keep --queue 150ms -- true >"$TESTDIR/keep.out" 2>&1 ||
    { cat "$TESTDIR/keep.out"; fail "--keep run failed"; }
tc -n "$PREFIX-h1" qdisc show dev eth0 | grep -q "tbf .*rate 1Gbit" ||
    fail "no tbf at 1gbit on host 1's egress: $(tc -n "$PREFIX-h1" qdisc show dev eth0)"
tc -n "$PREFIX-h1" qdisc show dev eth0 | grep -q "lat 150ms" ||
    fail "--queue 150ms not applied: $(tc -n "$PREFIX-h1" qdisc show dev eth0)"
tc -n "$PREFIX-br" qdisc show dev veth1 | grep -q "tbf .*rate 1Gbit" ||
    fail "no tbf at 1gbit towards host 1: $(tc -n "$PREFIX-br" qdisc show dev veth1)"
[ -n "$(leftovers)" ] || fail "--keep did not keep the namespaces"
bash "$NC" --teardown --name "$PREFIX" || fail "--teardown failed"
check_clean "--teardown"
echo "ok: both directions shaped, --keep and --teardown work"

# --- 3. A failing job: non-zero status, still cleaned up ---------------------------------------
netc -- false >"$TESTDIR/false.out" 2>&1
rc=$?
[ $rc -ne 0 ] || { cat "$TESTDIR/false.out"; fail "'-- false' returned 0"; }
check_clean "a failing job"
echo "ok: '-- false' returned $rc and left nothing behind"

# --- 4. --timeout kills a hung job (status 124) and cleans up ----------------------------------
netc --timeout 2 -- sleep 60 >"$TESTDIR/timeout.out" 2>&1
rc=$?
[ $rc -eq 124 ] || { cat "$TESTDIR/timeout.out"; fail "--timeout returned $rc, not 124"; }
check_clean "--timeout"
echo "ok: --timeout returned 124 and left nothing behind"

# --- 5. The ranks talk over the subnet: real MPI programs across the two hosts -----------------
# MPICH 4.0 (Debian 12) can hang in MPI_Finalize after ranks on two hosts exchanged messages: its
# UCX endpoints over TCP wait for a peer that already sits in the final PMI barrier (about one job
# in ten on a loaded machine).  Under MPICH the test ends here, as a skip: steps 1 to 4 did run.
if [ "$MPI_IMPL" = mpich ]; then
    skip "steps 1-4 passed; MPI programs across hosts not run:" \
        "MPICH 4.0's UCX can hang in MPI_Finalize over TCP"
fi
# (Host 1 has only lo and its veth, so every MPI message between the ranks crossed the link.)
# A small ring + all-reduce compiled here (with the build's compiler, $MPICC, when it exists), and
# the project's mpi_allreduce_check (plain MPI, exact results) when it has been built.
ring=""
MPICC=${MPICC:-mpicc}
if command -v "${MPICC%% *}" >/dev/null 2>&1; then
    cat >"$TESTDIR/ring.c" <<'EOF'
/* Every rank sends its rank to the next one and all-reduces the ranks; prints its processor.
 * Fails unless the world has argv[1] ranks. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int rank, size, got = -1, sum = 0, len;
    char name[MPI_MAX_PROCESSOR_NAME];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(name, &len);
    MPI_Sendrecv(&rank, 1, MPI_INT, (rank + 1) % size, 0, &got, 1, MPI_INT,
                 (rank + size - 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("ring rank %d on %s got %d sum %d\n", rank, name, got, sum);
    MPI_Finalize();
    return argc > 1 && size == atoi(argv[1]) && got == (rank + size - 1) % size &&
                   sum == size * (size - 1) / 2 ? 0 : 1;
}
EOF
    if $MPICC -o "$TESTDIR/ring" "$TESTDIR/ring.c" 2>"$TESTDIR/mpicc.err"; then
        ring="$TESTDIR/ring"
    else
        cat "$TESTDIR/mpicc.err"
    fi
fi
# run_across NAME PROGRAM [ARGS...]: the program on the 2 hosts must succeed.
run_across() {
    name=$1; shift
    netc -- "$@" >"$TESTDIR/mpi.out" 2>&1
    rc=$?
    cat "$TESTDIR/mpi.out"
    [ $rc -eq 0 ] || fail "$name across 2 hosts exited $rc"
    echo "ok: $name ran across the 2 hosts"
    check_clean "$name"
}
check="$top_builddir/tests/mpi/mpi_allreduce_check"
[ -z "$ring" ] || run_across ring "$ring" 2
if [ -x "$check" ]; then
    run_across "mpi_allreduce_check size" "$check" size 2
    run_across "mpi_allreduce_check passthrough" "$check" passthrough
fi
if [ -z "$ring" ] && [ ! -x "$check" ]; then
    echo "note: no MPI program to run (no $MPICC, no mpi_allreduce_check built)"
fi

echo "PASS"
exit 0

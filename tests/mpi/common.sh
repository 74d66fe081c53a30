# Shared by the tests/mpi/*.sh scripts (sourced).  Provides:
#   $SQZ_LIB       the built interposer (libsqueeze_mpi.so in the build tree)
#   $TESTDIR       a fresh scratch directory, removed at exit
#   run_np N ...   mpirun with N ranks, the interposer preloaded, every SQZ_* variable of the
#                  environment forwarded, and a time limit (never a hang)
#   json_get FILE KEY   a top-level number from a stats JSON file
#   fail MSG       prints and exits 1
set -u
: "${top_builddir:?top_builddir must be set (make check sets it)}"
: "${top_srcdir:?top_srcdir must be set}"
SQZ_LIB="$top_builddir/.libs/libsqueeze_mpi.so"
[ -f "$SQZ_LIB" ] || { echo "missing $SQZ_LIB"; exit 99; }
TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/sqz-test.XXXXXX")
trap 'rm -rf "$TESTDIR"' EXIT
MPIRUN_TIMEOUT=${MPIRUN_TIMEOUT:-120}

fail() { echo "FAIL: $*"; exit 1; }

mpirun_flags() {
    flags="--oversubscribe --bind-to none --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none"
    [ "$(id -u)" = 0 ] && flags="$flags --allow-run-as-root"
    echo "$flags"
}

run_np() {
    np=$1; shift
    xs="-x LD_PRELOAD=$SQZ_LIB"
    for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do xs="$xs -x $v"; done
    # shellcheck disable=SC2046,SC2086
    timeout "$MPIRUN_TIMEOUT" "$MPIRUN" $(mpirun_flags) -np "$np" $xs "$@"
}

json_get() {
    sed -n "s/^  \"$2\": \([-0-9.e+]*\),*$/\1/p" "$1" | head -n 1
}

# Shared by the tests/mpi/*.sh scripts (sourced).  Provides:
#   $SQZ_LIB       the built interposer (libsqueeze_mpi.so in the build tree)
#   $TESTDIR       a fresh scratch directory, removed at exit
#   run_np N ...   mpirun with N ranks, the interposer preloaded, every SQZ_* variable of the
#                  environment forwarded, and a time limit (never a hang)
#   json_get FILE KEY   a top-level number from a stats JSON file
#   fail MSG       prints and exits 1
#   bad MSG        prints and counts a failure in $failures (the script decides at its end)
#   run_case LOG NP [VAR=value ...] -- PROGRAM [ARGS...]   run_np with these settings, output in LOG
#   mpi4py_python  prints a python3 with mpi4py and numpy (fails when there is none)
# Sourcing it also clears every SQZ_* variable: run_np forwards them all, so only what a case sets
# may reach the ranks (SQUEEZE_TEST_PLUGIN belongs to make check, not to the library).
set -u
: "${top_builddir:?top_builddir must be set (make check sets it)}"
: "${top_srcdir:?top_srcdir must be set}"
SQZ_LIB="$top_builddir/.libs/libsqueeze_mpi.so"
[ -f "$SQZ_LIB" ] || { echo "missing $SQZ_LIB"; exit 99; }
TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/sqz-test.XXXXXX")
trap 'rm -rf "$TESTDIR"' EXIT
MPIRUN_TIMEOUT=${MPIRUN_TIMEOUT:-120}

for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

fail() { echo "FAIL: $*"; exit 1; }
failures=0
bad() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

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

# run_case LOG NP [VAR=value ...] -- PROGRAM [ARGS ...]: run_np with these settings exported.
run_case() {
    _log=$1 _np=$2
    shift 2
    (
        # shellcheck disable=SC2163 # $1 is NAME=value
        while [ $# -gt 0 ] && [ "$1" != -- ]; do export "$1"; shift; done
        [ $# -gt 0 ] && shift
        run_np "$_np" "$@"
    ) >"$_log" 2>&1
}

# mpi4py_python: the distribution's Python first: its mpi4py is built against the distribution's
# MPI, the one mpirun starts.  A Python of another installation may carry an mpi4py built for
# another MPI.
mpi4py_python() {
    for _p in /usr/bin/python3 ${PYTHON3:-} python3; do
        if command -v "$_p" >/dev/null 2>&1 && "$_p" -c 'import mpi4py, numpy' >/dev/null 2>&1; then
            command -v "$_p"
            return 0
        fi
    done
    return 1
}

# Shared by the tests/mpi/*.sh and tests/python/*.sh scripts (sourced).  Provides:
#   $SQZ_LIB       the built interposer (libsqueeze_mpi.so in the build tree)
#   $TESTDIR       a fresh scratch directory, removed at exit
#   $MPI_TEST_RANKS  the rank counts of the tests that repeat their cases over several (from the
#                  environment; default "2 4": scripts/test.sh's ASan pass runs "3", fewer jobs)
#   run_np N ...   N ranks of a program (Open MPI's mpirun or MPICH's mpiexec: MPIRUN, MPI_IMPL,
#                  scripts/mpi_launch.sh), the interposer preloaded, every SQZ_* variable of the
#                  environment forwarded, and a time limit (never a hang)
#   run_mpmd -np N [VAR=value ...] PROGRAM [ARGS...] [: -np N [VAR=value ...] PROGRAM [ARGS...] ...]
#                  one job of several app contexts, as run_np (interposer, SQZ_*, time limit);
#                  each context's VAR=value settings reach its own ranks only
#   run_job [VAR=value | VAR ...] -np N ...   a job without the interposer (the words of
#                  mpi_command: the leading settings reach every rank), with the time limit
#   json_get FILE KEY   a top-level number from a stats JSON file
#   fail MSG       prints and exits 1
#   bad MSG        prints and counts a failure in $failures (the script decides at its end)
#   run_case LOG NP [VAR=value ...] -- PROGRAM [ARGS...]   run_np with these settings, output in LOG
#   mpi4py_python  prints a python3 with numpy and an mpi4py of the MPI under test (fails when
#                  there is none)
#   mpirun_flags   the flags every launch takes (mpi_flags)
#   preload LIB... the LD_PRELOAD value that loads LIB... (the ASan runtime first in a sanitized
#                  build: an uninstrumented program must load it before any instrumented library)
#   $PY_ENV        VAR=value words for a Python process of a sanitized build (empty otherwise)
#   python_check_ranks PY SCRIPT
#                  runs tests/python/SCRIPT with PY under $MPI_TEST_RANKS ranks each, against
#                  this build's libsqueeze.so; prints its PASS/FAIL/SKIP lines, counts a non-zero
#                  exit with bad
# Sourcing it checks that the launcher starts one world of several ranks (exit 99 otherwise): a
# launcher of another MPI than the programs' starts singletons, on which tests could pass.
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
MPI_TEST_RANKS=${MPI_TEST_RANKS:-2 4}
. "$top_srcdir/scripts/mpi_launch.sh"
command -v "${MPIRUN:-mpirun}" >/dev/null 2>&1 || { echo "SKIP: no ${MPIRUN:-mpirun}"; exit 77; }
mpi_launch_init || exit 99

for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

fail() { echo "FAIL: $*"; exit 1; }
failures=0
bad() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

mpirun_flags() { mpi_flags; }

preload() {
    _pl=${SQUEEZE_ASAN_RUNTIME:-}
    for _l in "$@"; do _pl=${_pl:+$_pl:}$_l; done
    echo "$_pl"
}

# A sanitized build's Python runs without the leak check at exit: CPython leaves its objects to the
# OS.  ASan and UBSan still check every access of the library.
PY_ENV=
[ -z "${SQUEEZE_ASAN_RUNTIME:-}" ] || PY_ENV="ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0"

run_job() {
    MPI_TIMEOUT=$MPIRUN_TIMEOUT mpi_launch "$@"
}

# world_check: 2 ranks of mpi_allreduce_check must see one MPI_COMM_WORLD of 2; exits 99 otherwise.
world_check() {
    _wc="$top_builddir/tests/mpi/mpi_allreduce_check"
    [ -x "$_wc" ] || { echo "missing $_wc (make check builds it)"; exit 99; }
    if ! run_job -np 2 "$_wc" size 2 >"$TESTDIR/world.log" 2>&1; then
        sed 's/^/   | /' "$TESTDIR/world.log" | tail -n 40
        echo "ERROR: $MPIRUN ($MPI_IMPL) does not start one 2-rank job of the test programs" \
            "(a launcher of another MPI than the compiler's?)"
        exit 99
    fi
    echo "launcher: $MPIRUN ($MPI_IMPL) starts one world of 2 ranks"
}
world_check

# The settings every interposed rank takes: the interposer, every SQZ_* variable, and the
# sanitizers' options when set (a launcher need not pass on its own environment).
interposed_env() {
    echo "LD_PRELOAD=$(preload "$SQZ_LIB")"
    env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p; s/^\(\(A\|L\|UB\)SAN_OPTIONS\)=.*/\1/p'
}

run_mpmd() {
    # shellcheck disable=SC2046 # one setting per word
    run_job $(interposed_env) "$@"
}

run_np() {
    _rn=$1
    shift
    run_mpmd -np "$_rn" "$@"
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
# MPI.  A Python of another installation may carry an mpi4py built for another MPI; Debian's
# python3-mpi4py is built for Open MPI, so under MPICH there is usually none.
mpi4py_python() {
    for _p in /usr/bin/python3 ${PYTHON3:-} python3; do
        if command -v "$_p" >/dev/null 2>&1 && "$_p" -c '
import sys, numpy, mpi4py
mpi4py.rc.initialize = False
from mpi4py import MPI
v = MPI.Get_library_version()
sys.exit(0 if ("Open MPI" in v) == (sys.argv[1] == "openmpi") and
         ("MPICH" in v) == (sys.argv[1] == "mpich") else 1)' "$MPI_IMPL" >/dev/null 2>&1; then
            command -v "$_p"
            return 0
        fi
    done
    return 1
}

python_check_ranks() {
    SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so"
    export SQUEEZE_LIB
    for _np in $MPI_TEST_RANKS; do
        echo "== $_np ranks: $1 $2"
        # shellcheck disable=SC2086 # PY_ENV is words
        run_job SQUEEZE_LIB LD_PRELOAD="$(preload)" $PY_ENV -np "$_np" \
            "$1" "$top_srcdir/tests/python/$2" >"$TESTDIR/log$_np" 2>&1
        _rc=$?
        sed 's/^/   /' "$TESTDIR/log$_np" | grep -E 'PASS|FAIL|SKIP|Error|error' | head -n 40
        [ "$_rc" -eq 0 ] || bad "$_np ranks: $2 exited $_rc"
    done
}

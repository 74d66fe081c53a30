#!/bin/sh
# The whole test suite: installs what is missing, builds, and runs three passes of make check:
#   default  in the source tree: unit, fuzz, mpirun (Open MPI) and Python tiers; the CUDA tiers
#            skip without a GPU
#   mpich    the MPI and Python tiers (tests/mpi, tests/python) of a build with CC=mpicc.mpich,
#            launched by MPICH's mpiexec (mpich and libmpich-dev are installed when missing)
#   asan     every tier of a build with --enable-sanitizers (ASan, UBSan, LeakSanitizer)
# In the mpich and asan passes the MPI tests that repeat their cases at 2 and 4 ranks run them
# once, at 3 (MPI_TEST_RANKS: about half the jobs, and an uneven split of every buffer), and the
# churn test runs 1000 calls a case instead of 2500 (CHURN_CALLS: MPICH's ranks poll, 4 of them
# on 2 cores take 3x Open MPI's time).  Those two builds leave the GPU code out (--with-cuda=no:
# the default pass compiles it, and no pass has a GPU to run it), which saves nvcc's minutes.
# Usage: scripts/test.sh [--fast | PASS ...]   --fast: the default pass only; no argument: all.
# The mpich and asan builds are out of tree, in build-ci/NAME, from the copy of the sources that
# make distdir writes to build-ci/src (automake builds out of tree only from an unconfigured tree).
# Every pass runs; the failing logs are printed, and the script fails when a pass failed.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

passes="default mpich asan"
case ${1:-} in
--fast) passes=default ;;
-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
?*) passes="$*" ;;
esac
for p in $passes; do
    case $p in default | mpich | asan) ;; *) echo "test.sh: unknown pass '$p'" >&2; exit 2 ;; esac
done

sh scripts/setup.sh

# show_failures DIR: the tail of every failing test's log in the build tree DIR.
show_failures() {
    for f in $(find "$1/tests" -name '*.log' ! -name test-suite.log); do
        if grep -q '^:test-result: \(FAIL\|ERROR\)' "${f%.log}.trs" 2>/dev/null; then
            echo "===== $f"
            tail -n 60 "$f"
        fi
    done
}

# check_in DIR [MAKE ARGUMENTS]: make check in the build tree DIR (its output in DIR/check.out);
# prints every test's result and the counts, and the failing logs when it fails.
check_in() {
    _dir=$1
    shift
    if make -C "$_dir" -j"$(nproc)" check "$@" >"$_dir/check.out" 2>&1; then
        _rc=0
        grep -E '^(PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' "$_dir/check.out" || true
    else
        _rc=1
        tail -n 80 "$_dir/check.out"
        show_failures "$_dir"
    fi
    echo "$_dir: $(sed -n 's/^# \([A-Z]*\): *\([0-9]*\)$/\1 \2/p' "$_dir/test-suite.log" 2>/dev/null |
        tr '\n' ' ')"
    return $_rc
}

# build_copy NAME [CONFIGURE ARGUMENTS]: configures (once) and builds build-ci/NAME from the
# copy of the sources in build-ci/src.
build_copy() {
    _b="$top/build-ci/$1"
    shift
    mkdir -p "$_b"
    if [ ! -f "$_b/Makefile" ] || [ "$top/build-ci/src/configure" -nt "$_b/config.status" ]; then
        (cd "$_b" && ../src/configure --enable-werror "$@" >configure.out 2>&1) ||
            { tail -n 30 "$_b/configure.out"; return 1; }
    fi
    make -C "$_b" -j"$(nproc)" >"$_b/make.out" 2>&1 || { tail -n 30 "$_b/make.out"; return 1; }
}

# run_pass NAME: one pass; prints its name, result and time.
run_pass() {
    _t0=$(date +%s)
    echo "=== pass $1"
    if "pass_$1"; then _res=ok; else _res=FAILED; fi
    echo "=== pass $1: $_res in $(($(date +%s) - _t0)) s"
    [ "$_res" = ok ]
}

# The mpich and asan passes' smaller MPI jobs (see the top).
fewer="MPI_TEST_RANKS=3 CHURN_CALLS=1000"

pass_default() {
    check_in "$top"
}

pass_mpich() {
    sh scripts/setup.sh --mpich
    build_copy mpich CC=mpicc.mpich --with-cuda=no &&
        check_in "$top/build-ci/mpich" TESTS='$(mpi_tests) $(python_tests)' $fewer
}

pass_asan() {
    build_copy asan --enable-sanitizers --with-cuda=no && check_in "$top/build-ci/asan" $fewer
}

case " $passes " in
*" mpich "* | *" asan "*)
    mkdir -p build-ci
    make distdir distdir="$top/build-ci/src" >build-ci/distdir.out 2>&1 ||
        { tail -n 30 build-ci/distdir.out; exit 1; }
    ;;
esac
failed=
for p in $passes; do
    run_pass "$p" || failed="$failed $p"
done
if [ -n "$failed" ]; then
    echo "test.sh: failed:$failed"
    exit 1
fi

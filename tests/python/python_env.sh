# Sourced by the tests/python/*.sh scripts that run the binding in one process: the library of
# this build tree (SQUEEZE_LIB), the package of this source tree first on PYTHONPATH, and in a
# sanitized build the ASan runtime preloaded before the instrumented library, with no leak check
# of CPython at exit (as PY_ENV of tests/mpi/common.sh).
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so"
PYTHONPATH="$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}"
export SQUEEZE_LIB PYTHONPATH
if [ -n "${SQUEEZE_ASAN_RUNTIME:-}" ]; then
    LD_PRELOAD=$SQUEEZE_ASAN_RUNTIME ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
    export LD_PRELOAD ASAN_OPTIONS
fi

#!/bin/sh
# The Python binding (python/squeeze) against the library of this build tree, with the
# distribution's or the configured python3: no PyTorch, no GPU needed (tests/python/test_binding.py).
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
SQUEEZE_LIB="$top_builddir/.libs/libsqueeze.so"
PYTHONPATH="$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}"
export SQUEEZE_LIB PYTHONPATH
if [ -n "${SQUEEZE_ASAN_RUNTIME:-}" ]; then
    # A sanitized build: the ASan runtime before the instrumented library, and no leak check of
    # CPython at exit (as PY_ENV of tests/mpi/common.sh).
    LD_PRELOAD=$SQUEEZE_ASAN_RUNTIME ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
    export LD_PRELOAD ASAN_OPTIONS
fi
if ! command -v "${PYTHON3:-python3}" >/dev/null 2>&1; then
    echo "SKIP: no python3"
    exit 77
fi
exec "${PYTHON3:-python3}" "$top_srcdir/tests/python/test_binding.py"

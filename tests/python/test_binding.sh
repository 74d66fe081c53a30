#!/bin/sh
# The Python binding (python/squeeze) against the library of this build tree, with the
# distribution's or the configured python3: no PyTorch, no GPU needed (tests/python/test_binding.py).
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/python/python_env.sh"
if ! command -v "${PYTHON3:-python3}" >/dev/null 2>&1; then
    echo "SKIP: no python3"
    exit 77
fi
exec "${PYTHON3:-python3}" "$top_srcdir/tests/python/test_binding.py"

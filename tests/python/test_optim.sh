#!/bin/sh
# squeeze.optim (1-bit Adam, 0/1 Adam) against the library of this build tree, W ranks in threads
# of one process (tests/python/test_optim.py): needs PyTorch (python3-torch), no GPU; skips without.
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
. "$top_srcdir/tests/python/python_env.sh"
# A python3 with PyTorch: the distribution's first (python3-torch), then the configured one.
for py in /usr/bin/python3 ${PYTHON3:-} python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c "import torch" >/dev/null 2>&1; then
        exec "$py" "$top_srcdir/tests/python/test_optim.py"
    fi
done
echo "SKIP: no python3 with PyTorch (Debian: apt-get install python3-torch)"
exit 77

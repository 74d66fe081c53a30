#!/bin/sh
# `pip install ./python` gives a package that imports on its own, finds libsqueeze.so through the
# loader's path, and names every place it tried when it cannot.  Needs pip (python3-pip) and
# setuptools; skips without (offline, hence --no-build-isolation: the installed setuptools build).
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
set -u
py=/usr/bin/python3
[ -x "$py" ] || py=${PYTHON3:-python3}
if ! "$py" -m pip --version >/dev/null 2>&1 || ! "$py" -c "import setuptools, wheel" >/dev/null 2>&1; then
    echo "SKIP: no pip/setuptools/wheel for $py (Debian: apt-get install python3-pip)"
    exit 77
fi
if [ -n "${SQUEEZE_ASAN_RUNTIME:-}" ]; then
    echo "SKIP: pip under the sanitizers' preload"
    exit 77
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/sqz-pip.XXXXXX")
trap 'rm -rf "$T"' EXIT
cp -R "$top_srcdir/python" "$T/src" && chmod -R u+w "$T/src" # pip writes build/ beside the sources
if ! "$py" -m pip install --quiet --no-build-isolation --no-deps --target "$T/site" "$T/src" \
    >"$T/pip.log" 2>&1; then
    cat "$T/pip.log"
    echo "FAIL: pip install ./python"
    exit 1
fi
cd "$T" || exit 1
out=$(env -u SQUEEZE_LIB PYTHONPATH="$T/site" LD_LIBRARY_PATH="$top_builddir/.libs" "$py" -c \
    'import squeeze, squeeze.optim; print(squeeze.__file__, squeeze.library_path(), squeeze.version())' 2>&1)
case $out in
"$T/site/squeeze/__init__.py"*"(0, 1, 0)"*) echo "ok: $out" ;;
*) echo "FAIL: the pip-installed package did not load the library: $out"; exit 1 ;;
esac
out=$(env -u SQUEEZE_LIB -u LD_LIBRARY_PATH PYTHONPATH="$T/site" "$py" -c '
import squeeze
try:
    squeeze.version()
    print("loaded")
except squeeze.SqueezeError as e:
    print(e)' 2>&1)
case $out in
*"libsqueeze.so not found; tried:"*"SQUEEZE_LIB"*) echo "ok: without it: ${out%%;*} ..." ;;
loaded) echo "SKIP: a libsqueeze.so is installed system-wide"; exit 77 ;;
*) echo "FAIL: unclear error without the library: $out"; exit 1 ;;
esac
echo "PASS: pip install ./python"

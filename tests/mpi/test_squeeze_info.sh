#!/bin/sh
# squeeze_info: lists every core parameter and every compressor (plugins included when
# SQZ_PLUGINS names them), writes the Markdown parameter table, and rejects a bad value with the
# variable and its bounds.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

# A clean Squeeze environment.  SQUEEZE_TEST_PLUGIN belongs to make check, not to the library: keep it
# aside.
PLUGIN=${SQUEEZE_TEST_PLUGIN:-}

INFO="$top_builddir/squeeze_info"
[ -x "$INFO" ] || { echo "missing $INFO (make builds it)"; exit 99; }

# expect LOG ERE DESCRIPTION
expect() {
    if grep -E -q -- "$2" "$1"; then
        echo "   ok: $3"
    else
        bad "$3 (no line matches /$2/)"
    fi
}

echo "== squeeze_info"
out="$TESTDIR/info.txt"
"$INFO" >"$out" 2>"$TESTDIR/info.err"
rc=$?
[ "$rc" -eq 0 ] || { bad "squeeze_info exited $rc"; sed 's/^/   | /' "$TESTDIR/info.err"; }
[ -s "$TESTDIR/info.err" ] && { bad "squeeze_info wrote to stderr"; sed 's/^/   | /' "$TESTDIR/info.err"; }
# The core parameters named by the design, and every entry of the core table in the sources
# (so that a parameter added there without reaching squeeze_info is caught).
core="METHOD EF MIN_BYTES WARMUP_STEPS STATS LOG PLUGINS CONFIG SEED IALLREDUCE CHECK_SETTINGS"
table=$(sed -n 's/^ *\(JOB\|RANK\)("\([A-Z0-9_]*\)", SQZ_PARAM_.*/\2/p' "$top_srcdir/src/core/sqz_core_params.c")
[ -n "$table" ] || bad "cannot read the core parameter table from src/core/sqz_core_params.c"
missing=
for p in $core $table; do
    grep -E -q "^ +SQZ_$p +\[core\]" "$out" || missing="$missing SQZ_$p"
done
if [ -z "$missing" ]; then
    echo "   ok: every core parameter is listed ($(echo "$table" | wc -w) in the table)"
else
    bad "core parameter(s) not listed:$missing"
fi
missing=
for p in TOPK_DENSITY TOPK_SELECT QUANT_BITS QUANT_BUCKET QUANT_ROUNDING SIGN_SCALE; do
    grep -E -q "^ +SQZ_$p +\[(topk|quant|sign)\]" "$out" || missing="$missing SQZ_$p"
done
if [ -z "$missing" ]; then
    echo "   ok: the compressor parameters are listed"
else
    bad "compressor parameter(s) not listed:$missing"
fi
# The compressor list follows its header line.
sed -n '/^Compressors/,/^$/p' "$out" >"$TESTDIR/comp.txt"
for m in none topk quant sign; do
    expect "$TESTDIR/comp.txt" "^ +$m +.*built-in" "compressor $m is listed as built-in"
done
if grep -E -q '^ +example ' "$TESTDIR/comp.txt"; then
    bad "compressor example is listed without SQZ_PLUGINS"
fi

echo "== SQZ_PLUGINS=<example plugin> squeeze_info"
if [ -n "$PLUGIN" ] && [ -f "$PLUGIN" ]; then
    out="$TESTDIR/info-plugin.txt"
    SQZ_PLUGINS="$PLUGIN" "$INFO" >"$out" 2>&1 || bad "squeeze_info with the plugin exited $?"
    sed -n '/^Compressors/,/^$/p' "$out" >"$TESTDIR/comp-plugin.txt"
    expect "$TESTDIR/comp-plugin.txt" "^ +example .*$(basename "$PLUGIN")" \
        "compressor example is listed, from the plugin's file"
    for m in none topk quant sign; do
        expect "$TESTDIR/comp-plugin.txt" "^ +$m " "compressor $m is still listed"
    done
    expect "$out" '^ +SQZ_EXAMPLE_[A-Z0-9_]+ +\[example\]' "the plugin's parameters are listed"
else
    bad "the example plugin is missing (SQUEEZE_TEST_PLUGIN='$PLUGIN')"
fi

echo "== squeeze_info --markdown"
out="$TESTDIR/params.md"
"$INFO" --markdown >"$out" 2>&1 || bad "squeeze_info --markdown exited $?"
# shellcheck disable=SC2016 # the backquotes are Markdown's
expect "$out" '^\| `SQZ_TOPK_DENSITY` \|.*\|' "a table row for SQZ_TOPK_DENSITY"
# shellcheck disable=SC2016
expect "$out" '^\| `SQZ_METHOD` \|' "a table row for SQZ_METHOD"
expect "$out" '^\|---' "a Markdown table header"

echo "== SQZ_TOPK_DENSITY=5 squeeze_info"
out="$TESTDIR/bad.txt"
SQZ_TOPK_DENSITY=5 "$INFO" >"$out" 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "   ok: squeeze_info exited $rc"
else
    bad "squeeze_info accepted SQZ_TOPK_DENSITY=5"
fi
expect "$out" 'SQZ_TOPK_DENSITY.*5' "the message names SQZ_TOPK_DENSITY and the value"
expect "$out" 'SQZ_TOPK_DENSITY.*\[1e-0?6, 1\]' "the message gives the bounds [1e-06, 1]"

# docs/params.md is generated from the same table: it must not drift (make docs-params).
if env -u SQZ_TOPK_DENSITY "$top_builddir/squeeze_info" --markdown | diff -u "$top_srcdir/docs/params.md" - >"$TESTDIR/params.diff"; then
    echo "   ok: docs/params.md matches squeeze_info --markdown"
else
    sed 's/^/   | /' "$TESTDIR/params.diff" | head -n 40
    bad "docs/params.md is stale: run 'make docs-params'"
fi

if [ "$failures" -ne 0 ]; then
    sed 's/^/   | /' "$TESTDIR/info.txt" | head -n 80
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: squeeze_info lists every parameter and compressor"
exit 0

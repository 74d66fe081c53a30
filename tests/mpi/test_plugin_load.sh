#!/bin/sh
# Plugins: a plugin that cannot be loaded is a warning, never fatal (the job runs with the built-in
# methods); the out-of-tree example plugin, named by SQZ_PLUGINS, provides SQZ_METHOD=example and
# is used for the compressed calls.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

# A clean Squeeze environment: run_np forwards every SQZ_* variable, so only what a case sets may
# reach the ranks.  SQUEEZE_TEST_PLUGIN belongs to make check, not to the library: keep it aside.
PLUGIN=${SQUEEZE_TEST_PLUGIN:-}

QUAD="$top_builddir/tests/mpi/mpi_quadratic"
[ -x "$QUAD" ] || { echo "missing $QUAD (make check builds it)"; exit 99; }
if [ -z "$PLUGIN" ] || [ ! -f "$PLUGIN" ]; then
    echo "FAIL: the example plugin is missing (SQUEEZE_TEST_PLUGIN='$PLUGIN')"
    exit 1
fi

# stats_check LABEL FILE METHOD: the stats name METHOD and count compressed calls.
stats_check() {
    if [ ! -f "$2" ]; then
        bad "$1: no stats file $2"
    elif ! grep -q "\"method\": \"$3\"" "$2"; then
        bad "$1: the stats do not name method $3"
        sed 's/^/   | /' "$2"
    else
        c=$(json_get "$2" calls_compressed)
        if [ -n "$c" ] && [ "$c" -gt 0 ]; then
            echo "   ok: method $3, $c compressed call(s)"
        else
            bad "$1: calls_compressed='$c' (expected > 0)"
            sed 's/^/   | /' "$2"
        fi
    fi
}

# ran_ok LABEL LOG RC: the job succeeded and the program finished.
ran_ok() {
    if [ "$3" -eq 0 ] && grep -q '^final relative distance' "$2"; then
        echo "   ok: the job ran to the end"
        return 0
    fi
    bad "$1: the job exited $3"
    sed 's/^/   | /' "$2" | head -n 30
    return 1
}

# A missing plugin file: a warning naming it, and topk still works.
missing="$TESTDIR/no-such-plugin.so"
echo "== SQZ_PLUGINS=<missing file> SQZ_METHOD=topk"
log="$TESTDIR/missing.log"
run_case "$log" 2 SQZ_PLUGINS="$missing" SQZ_METHOD=topk SQZ_STATS="json:$TESTDIR/missing-%r.json" \
    -- "$QUAD" 5
rc=$?
ran_ok "missing plugin" "$log" "$rc"
if grep -E -q "^squeeze\[rank [0-9]+\] WARN: .*SQZ_PLUGINS.*no-such-plugin.so" "$log"; then
    echo "   ok: a warning names SQZ_PLUGINS and the file"
else
    bad "missing plugin: no warning names SQZ_PLUGINS and the file"
    sed 's/^/   | /' "$log" | head -n 30
fi
stats_check "missing plugin" "$TESTDIR/missing-0.json" topk

# A shared object that is not a plugin (no sqz_compressor_v1): skipped with a warning.
notplugin="$top_builddir/.libs/libsqueeze.so"
if [ -f "$notplugin" ]; then
    echo "== SQZ_PLUGINS=libsqueeze.so (not a plugin) SQZ_METHOD=quant"
    log="$TESTDIR/notplugin.log"
    run_case "$log" 2 SQZ_PLUGINS="$notplugin" SQZ_METHOD=quant -- "$QUAD" 5
    rc=$?
    ran_ok "not a plugin" "$log" "$rc"
    if grep -E -q "^squeeze\[rank [0-9]+\] WARN: .*SQZ_PLUGINS.*libsqueeze.so" "$log"; then
        echo "   ok: a warning names SQZ_PLUGINS and the file"
    else
        bad "not a plugin: no warning names SQZ_PLUGINS and the file"
        sed 's/^/   | /' "$log" | head -n 30
    fi
fi

# The example plugin, at 2 ranks, with a missing entry before it in the list (the loader skips
# it and goes on).
echo "== SQZ_PLUGINS=<missing>:$PLUGIN SQZ_METHOD=example"
log="$TESTDIR/example.log"
run_case "$log" 2 SQZ_PLUGINS="$missing:$PLUGIN" SQZ_METHOD=example \
    SQZ_STATS="json:$TESTDIR/example-%r.json" -- "$QUAD" 5
rc=$?
if ran_ok "example plugin" "$log" "$rc"; then
    stats_check "example plugin, rank 0" "$TESTDIR/example-0.json" example
    stats_check "example plugin, rank 1" "$TESTDIR/example-1.json" example
fi

# Without SQZ_PLUGINS, "example" is an unknown method.
echo "== SQZ_METHOD=example without SQZ_PLUGINS"
log="$TESTDIR/noplugin.log"
run_case "$log" 2 SQZ_METHOD=example -- "$QUAD" 5
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "SQZ_METHOD='\{0,1\}example" "$log"; then
    echo "   ok: the job stopped with status $rc naming SQZ_METHOD"
else
    bad "SQZ_METHOD=example without the plugin: status $rc"
    sed 's/^/   | /' "$log" | head -n 30
fi

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: plugins load from SQZ_PLUGINS, and a bad one is only a warning"
exit 0

#!/bin/sh
# Configuration errors stop the job at MPI_Init with a message that names the variable (and its
# bounds or choices) on every rank, never a hang; an unknown SQZ_* variable only warns; SQZ_CONFIG
# files are read, and the environment wins over them.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

QUAD="$top_builddir/tests/mpi/mpi_quadratic"
INFO="$top_builddir/squeeze_info"
[ -x "$QUAD" ] || { echo "missing $QUAD (make check builds it)"; exit 99; }

# expect LOG ERE DESCRIPTION: the log must match the extended regular expression.
expect() {
    if grep -E -q -- "$2" "$1"; then
        echo "   ok: $3"
    else
        bad "$3 (no line matches /$2/)"
        sed 's/^/   | /' "$1" | head -n 30
    fi
}

# must_fail LABEL [VAR=value ...]: 2 ranks of a short job; it must stop with a non-zero status
# before the program runs, within the time limit, and with a message from both ranks.
must_fail() {
    label=$1
    shift
    log="$TESTDIR/$label.log"
    echo "== $label: $*"
    run_case "$log" 2 "$@" -- "$QUAD" 3
    rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$label: the job succeeded"
        sed 's/^/   | /' "$log" | head -n 20
    elif [ "$rc" -eq 124 ]; then
        bad "$label: the job hung (killed after ${MPIRUN_TIMEOUT}s)"
    else
        echo "   ok: the job stopped with status $rc"
    fi
    if grep -q '^mpi_quadratic:' "$log"; then
        bad "$label: the program ran past MPI_Init"
    fi
    expect "$log" '^squeeze\[rank 0\] ERROR' "rank 0 reports the error"
    expect "$log" '^squeeze\[rank 1\] ERROR' "rank 1 reports the error"
}

# An unknown method: the message lists the known ones.
must_fail unknown-method SQZ_METHOD=nosuch
log="$TESTDIR/unknown-method.log"
expect "$log" "SQZ_METHOD='?nosuch" "the message names SQZ_METHOD and the value"
for m in none topk quant sign; do
    expect "$log" "known methods:.* $m( |\$)" "the message lists method $m"
done

# Out of range: the message gives the bounds [1e-06, 1].
must_fail density-out-of-range SQZ_METHOD=topk SQZ_TOPK_DENSITY=2
log="$TESTDIR/density-out-of-range.log"
expect "$log" 'SQZ_TOPK_DENSITY.*2' "the message names SQZ_TOPK_DENSITY and the value"
expect "$log" 'SQZ_TOPK_DENSITY.*\[1e-0?6, 1\]' "the message gives the bounds [1e-06, 1]"

# Not a number.
must_fail bits-not-a-number SQZ_METHOD=quant SQZ_QUANT_BITS=abc
log="$TESTDIR/bits-not-a-number.log"
expect "$log" "SQZ_QUANT_BITS.*abc" "the message names SQZ_QUANT_BITS and the value"
expect "$log" 'SQZ_QUANT_BITS.*\[1, 8\]' "the message gives the bounds [1, 8]"

# A bad SQZ_STATS value.
must_fail bad-stats SQZ_STATS=bogus
expect "$TESTDIR/bad-stats.log" 'SQZ_STATS' "the message names SQZ_STATS"

# SQZ_CONFIG naming a missing file.
must_fail missing-config SQZ_CONFIG="$TESTDIR/no-such-dir/squeeze.conf"
expect "$TESTDIR/missing-config.log" "SQZ_CONFIG=.*no-such-dir/squeeze.conf" \
    "the message names SQZ_CONFIG and the file"

# A malformed config file line.
printf 'SQZ_METHOD = topk\nthis line has no equals sign\n' >"$TESTDIR/malformed.conf"
must_fail malformed-config SQZ_CONFIG="$TESTDIR/malformed.conf"
expect "$TESTDIR/malformed-config.log" 'malformed.conf:2' "the message names the file and line 2"

# An unknown SQZ_* variable: a warning naming it, and the job runs.
echo "== unknown variable: SQZ_FOO_BAR=1"
log="$TESTDIR/unknown-var.log"
run_case "$log" 2 SQZ_FOO_BAR=1 -- "$QUAD" 3
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "   ok: the job succeeded"
else
    bad "unknown variable: the job exited $rc"
    sed 's/^/   | /' "$log" | head -n 20
fi
expect "$log" '^squeeze\[rank [01]\] WARN.*SQZ_FOO_BAR' "a warning names SQZ_FOO_BAR"
expect "$log" '^final relative distance' "the program ran to the end"

# A config file read through SQZ_CONFIG: both line forms, comments, blank lines.
cat >"$TESTDIR/squeeze.conf" <<'EOF'
# Squeeze settings for test_bad_config.sh

SQZ_METHOD = quant
QUANT_BITS=3      # the name without the SQZ_ prefix works too
EOF
echo "== config file: SQZ_CONFIG=squeeze.conf (SQZ_METHOD = quant, QUANT_BITS=3)"
log="$TESTDIR/config-file.log"
run_case "$log" 2 SQZ_CONFIG="$TESTDIR/squeeze.conf" SQZ_STATS="json:$TESTDIR/conf-%r.json" -- \
    "$QUAD" 3
rc=$?
if [ "$rc" -ne 0 ]; then
    bad "config file: the job exited $rc"
    sed 's/^/   | /' "$log" | head -n 20
elif ! grep -q '"method": "quant"' "$TESTDIR/conf-0.json" 2>/dev/null; then
    bad "config file: the stats of rank 0 do not show method quant"
    sed 's/^/   | /' "$TESTDIR/conf-0.json" 2>/dev/null
else
    c=$(json_get "$TESTDIR/conf-0.json" calls_compressed)
    if [ -n "$c" ] && [ "$c" -gt 0 ]; then
        echo "   ok: the stats show method quant, $c compressed call(s)"
    else
        bad "config file: calls_compressed='$c'"
    fi
fi

# The environment wins over the file (squeeze_info shows the value in force and its source).
if [ -x "$INFO" ]; then
    echo "== config file and environment: SQZ_QUANT_BITS=6 in the environment"
    log="$TESTDIR/config-env.log"
    SQZ_CONFIG="$TESTDIR/squeeze.conf" SQZ_QUANT_BITS=6 "$INFO" >"$log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
        bad "squeeze_info with the config file exited $rc"
        sed 's/^/   | /' "$log" | head -n 20
    fi
    expect "$log" 'method in force: quant' "squeeze_info: method quant from the file"
    # The line after the parameter's name holds its current value and source.
    sed -n '/SQZ_QUANT_BITS /{n;p;}' "$log" >"$log.bits"
    expect "$log.bits" "current: '6' \\(env\\)" "squeeze_info: SQZ_QUANT_BITS=6 from the environment wins"
fi

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: configuration errors are clear and stop the job on every rank"
exit 0

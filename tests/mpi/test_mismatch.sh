#!/bin/sh
# Ranks started with different Squeeze settings (the launcher's MPMD syntax, different settings per
# app context) must stop with an error printed by every rank, within the time limit: ranks whose
# eligibility or wire format differ would otherwise exchange garbage or hang.  Settings that only
# change local behaviour (SQZ_LOG, SQZ_STATS) may differ.
# shellcheck disable=SC2154 # top_srcdir comes from make check
. "$top_srcdir/tests/mpi/common.sh"

QUAD="$top_builddir/tests/mpi/mpi_quadratic"
[ -x "$QUAD" ] || { echo "missing $QUAD (make check builds it)"; exit 99; }

# mpmd LOG CONTEXT [: CONTEXT ...], each CONTEXT being "NP VAR=value ...": one job with an app
# context per CONTEXT, each running mpi_quadratic with the interposer and its own settings
# (run_mpmd: Open MPI's -x per app context, hydra's -env per executable).
mpmd() {
    _log=$1
    shift
    _n=$#
    _new=1
    for _a in "$@"; do
        if [ "$_new" = 1 ]; then
            set -- "$@" -np "$_a"
            _new=0
        elif [ "$_a" = : ]; then
            set -- "$@" "$QUAD" 3 :
            _new=1
        else
            set -- "$@" "$_a"
        fi
    done
    set -- "$@" "$QUAD" 3
    shift "$_n"
    echo "   $MPI_IMPL: $(echo "$*" | sed "s|$QUAD|mpi_quadratic|g")"
    run_mpmd "$@" >"$_log" 2>&1
}

# mismatch_case LABEL NRANKS VARIABLE CONTEXT [: CONTEXT ...]
#   the job must fail, every one of the NRANKS ranks must say that the settings differ, and some
#   message must name VARIABLE.
mismatch_case() {
    label=$1 nranks=$2 var=$3
    shift 3
    log="$TESTDIR/$label.log"
    echo "== $label"
    mpmd "$log" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$label: the job succeeded"
    elif [ "$rc" -eq 124 ]; then
        bad "$label: the job hung (killed after ${MPIRUN_TIMEOUT}s)"
    else
        echo "   ok: the job stopped with status $rc"
    fi
    if grep -q '^mpi_quadratic:' "$log"; then
        bad "$label: the program ran past MPI_Init"
    fi
    r=0
    while [ "$r" -lt "$nranks" ]; do
        n=$(grep -c -E "^squeeze\[rank $r\] ERROR: .*(settings differ|different Squeeze settings)" "$log")
        if [ "$n" -ge 1 ]; then
            echo "   ok: rank $r reports the mismatch ($n line(s))"
        else
            bad "$label: rank $r does not report the mismatch"
        fi
        r=$((r + 1))
    done
    if grep -E -q "^squeeze\[rank [0-9]+\] ERROR: .*$var" "$log"; then
        echo "   ok: the message names $var"
    else
        bad "$label: no message names $var"
    fi
    if [ "$failures" -ne 0 ]; then
        sed 's/^/   | /' "$log" | head -n 40
    fi
}

mismatch_case density 2 SQZ_TOPK_DENSITY \
    1 SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.1 : 1 SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.2
mismatch_case method-3-ranks 3 SQZ_METHOD \
    2 SQZ_METHOD=quant : 1 SQZ_METHOD=topk
mismatch_case error-feedback 2 SQZ_EF \
    1 SQZ_METHOD=sign SQZ_EF=ef14 : 1 SQZ_METHOD=sign SQZ_EF=none

# Local settings may differ: the job runs.
echo "== local settings differ (SQZ_LOG, SQZ_STATS)"
log="$TESTDIR/local.log"
mpmd "$log" 1 SQZ_METHOD=topk SQZ_LOG=info SQZ_STATS="json:$TESTDIR/local-%r.json" \
    : 1 SQZ_METHOD=topk SQZ_LOG=error
rc=$?
if [ "$rc" -ne 0 ]; then
    bad "local settings: the job exited $rc"
    sed 's/^/   | /' "$log" | head -n 30
elif ! grep -q '^final relative distance' "$log"; then
    bad "local settings: the program did not finish"
else
    echo "   ok: the job ran to the end"
fi

if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures check(s) failed"
    exit 1
fi
echo "PASS: mismatched settings stop the job with an error on every rank"
exit 0

#!/bin/sh
# Squeeze's GPU path under PyTorch + NCCL, two processes on two GPUs (torchrun):
#   (a) LD_PRELOAD=libsqueeze_nccl.so under an unmodified torch.distributed job, for
#       SQZ_METHOD=quant, topk, sign and powersgd;
#   (b) the Python binding: squeeze.Comm on the current stream and the squeeze.ddp hook;
#   (c) MoE token all-to-alls (torch.distributed.all_to_all_single) under LD_PRELOAD with
#       SQZ_MOE=dedup and lsh: tests/cuda/moe_torch_check.py, then the stats (rows < tokens,
#       passthroughs counted).
# tests/cuda/nccl_torch_check.py does the checks (exact passthrough, bit-identical compressed
# results with bounded error, error-feedback convergence, NaN handling, DDP).
# Exits 77 (skip) unless a python3 imports torch and sees at least 2 GPUs.
# Knobs: TORCHTEST_METHODS (default "quant topk sign powersgd"), TORCHTEST_MODES (default
# "preload hook moe"), TORCHTEST_MOE (default "dedup lsh"), TORCHTEST_TIMEOUT (seconds per torchrun job, default 600).
# shellcheck disable=SC2154 # top_srcdir and top_builddir come from make check
set -u
: "${top_builddir:?top_builddir must be set (make check sets it)}"
: "${top_srcdir:?top_srcdir must be set}"

TORCH_GPUS=2
# shellcheck source=tests/cuda/torch_python.sh
. "$top_srcdir/tests/cuda/torch_python.sh"

# NVLink multicast stays off on shared machines (NVLS can take a host's GPUs out of service).
NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST NVSHMEM_DISABLE_NVLS
METHODS=${TORCHTEST_METHODS:-quant topk sign powersgd}
MODES=${TORCHTEST_MODES:-preload hook moe}
MOE_CODECS=${TORCHTEST_MOE:-dedup lsh}
TIMEOUT=${TORCHTEST_TIMEOUT:-600}
# Only what a case sets may reach the library.
for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

SCRIPT="$top_srcdir/tests/cuda/nccl_torch_check.py"
PRELOAD="$top_builddir/.libs/libsqueeze_nccl.so"
LIB="$top_builddir/.libs/libsqueeze.so"
TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/sqz-torch.XXXXXX")
trap 'rm -rf "$TESTDIR"' EXIT
TIMEOUT_CMD=
command -v timeout >/dev/null 2>&1 && TIMEOUT_CMD="timeout $TIMEOUT"

failures=0
ran=0
bad() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

method_env() {
    case $1 in
    quant) echo "SQZ_METHOD=quant SQZ_QUANT_BITS=4" ;;
    topk) echo "SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.01" ;;
    sign) echo "SQZ_METHOD=sign" ;;
    powersgd) echo "SQZ_METHOD=powersgd SQZ_POWERSGD_START_STEPS=${PSGD_START:-0}" ;;
    esac
}

# run_case NAME MODE METHOD [VAR=value ...]: one torchrun job, its log in $TESTDIR/NAME.log;
# CASE_ARGS (if set) are more arguments for the script.
run_case() {
    name=$1 mode=$2 method=$3
    shift 3
    log="$TESTDIR/$name.log"
    echo "== $name: torchrun --nproc_per_node=2 nccl_torch_check.py --mode $mode, $* $(method_env "$method")"
    # shellcheck disable=SC2046,SC2086
    env "$@" $(method_env "$method") SQUEEZE_LIB="$LIB" \
        PYTHONPATH="$top_srcdir/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
        $TIMEOUT_CMD "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
        "$SCRIPT" --mode "$mode" --method "$method" ${CASE_ARGS:-} >"$log" 2>&1
    rc=$?
    ran=$((ran + 1))
    grep -E '^(PASS|FAIL|SKIP|nccl_torch_check|rank 0 squeeze)' "$log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "   (timed out after ${TIMEOUT}s)"
        sed 's/^/   | /' "$log" | tail -n 40
        bad "$name exited $rc"
    fi
    return $rc
}

# (a) the interposer under an unmodified torch.distributed job
case " $MODES " in *" preload "*) want_preload=1 ;; *) want_preload=0 ;; esac
case " $MODES " in *" hook "*) want_hook=1 ;; *) want_hook=0 ;; esac
if [ "$want_preload" -eq 0 ]; then
    :
elif [ -f "$PRELOAD" ]; then
    for m in $METHODS; do
        stats="$TESTDIR/preload-$m-%r.json"
        run_case "preload-$m" preload "$m" LD_PRELOAD="$PRELOAD" SQZ_STATS="json:$stats"
        for r in 0 1; do
            f=$(echo "$stats" | sed "s/%r/$r/")
            if [ -f "$f" ]; then
                c=$(sed -n 's/^ *"calls_compressed": *\([0-9]*\).*/\1/p' "$f" | head -n 1)
                if [ -z "$c" ] || [ "$c" -lt 1 ]; then
                    bad "preload-$m: rank $r's stats say calls_compressed='$c'"
                else
                    echo "   rank $r stats: calls_compressed $c"
                fi
            else
                echo "   (no stats file $f)"
            fi
        done
    done
else
    echo "SKIP (a): no $PRELOAD (built without NCCL support?)"
fi

# (b) the Python binding and the DDP hook
if [ "$want_hook" -eq 0 ]; then
    :
elif SQUEEZE_LIB="$LIB" PYTHONPATH="$top_srcdir/python" "$PY" -c \
    'import sys, squeeze; sys.exit(0 if squeeze.gpu_built() else 1)' >/dev/null 2>&1; then
    for m in $METHODS; do
        run_case "hook-$m" hook "$m"
    done
    case " $METHODS " in
    *" powersgd "*)
        # SQZ_EF=ef21 on the GPU PowerSGD path: exact tracking of rank-1 changes, then the
        # error-feedback least squares and the DDP hook under it.
        PSGD_START=1 CASE_ARGS="--only ef21,convergence,ddp"
        run_case hook-powersgd-ef21 hook powersgd SQZ_EF=ef21
        # The same first call as a core warm-up call (SQZ_WARMUP_STEPS) instead: it must set
        # the estimators too.
        PSGD_START=0 CASE_ARGS="--only ef21"
        run_case hook-powersgd-ef21-warmup hook powersgd SQZ_EF=ef21 SQZ_WARMUP_STEPS=1
        CASE_ARGS=
        ;;
    esac
else
    echo "SKIP (b): $LIB was built without the GPU path (squeeze.gpu_built() is False)"
fi

# (c) MoE token all-to-alls under the interposer
case " $MODES " in *" moe "*) want_moe=1 ;; *) want_moe=0 ;; esac
# Per rank: the codec ran (calls >= 1), never sent more rows than tokens, and some call passed
# through; over both ranks: fewer rows than tokens (one rank may code no tokens of its own: the
# uneven split sends rank 1 -> rank 0 nothing, and a rank's block to itself is copied, not coded).
MOE_STATS_CHECK='
import json, sys
codec, tokens, rows, ok = sys.argv[1], 0, 0, True
for path in sys.argv[2:]:
    moe = json.load(open(path))["moe"]
    row = moe["codecs"].get(codec, {})
    tokens += row.get("tokens", 0)
    rows += row.get("rows", 0)
    ok = ok and row.get("calls", 0) >= 1 and row.get("rows", 1) <= row.get("tokens", 0) \
        and moe["calls_passthrough"] >= 1
    print("%s: calls %s tokens %s rows %s bytes_in %s bytes_wire %s; passthrough %s" % (
        path, row.get("calls"), row.get("tokens"), row.get("rows"), row.get("bytes_in"),
        row.get("bytes_wire"), moe["calls_passthrough"]))
ok = ok and rows < tokens
print("%s over the ranks: %d rows for %d tokens" % (codec, rows, tokens))
sys.exit(0 if ok else 1)
'
if [ "$want_moe" -eq 1 ] && [ -f "$PRELOAD" ]; then
    for c in $MOE_CODECS; do
        stats="$TESTDIR/moe-$c-%r.json"
        log="$TESTDIR/moe-$c.log"
        echo "== moe-$c: torchrun --nproc_per_node=2 moe_torch_check.py --codec $c, SQZ_MOE=$c SQZ_MOE_DIM=64"
        # shellcheck disable=SC2086
        env LD_PRELOAD="$PRELOAD" SQZ_MOE="$c" SQZ_MOE_DIM=64 SQZ_STATS="json:$stats" \
            PYTHONUNBUFFERED=1 $TIMEOUT_CMD "$PY" -m torch.distributed.run --standalone \
            --nproc_per_node=2 "$top_srcdir/tests/cuda/moe_torch_check.py" --codec "$c" \
            >"$log" 2>&1
        rc=$?
        ran=$((ran + 1))
        grep -E '^(PASS|FAIL|SKIP|moe_torch_check)' "$log" | sed 's/^/   /'
        if [ "$rc" -ne 0 ]; then
            sed 's/^/   | /' "$log" | tail -n 40
            bad "moe-$c exited $rc"
            continue
        fi
        f0=$(echo "$stats" | sed "s/%r/0/")
        f1=$(echo "$stats" | sed "s/%r/1/")
        if out=$("$PY" -c "$MOE_STATS_CHECK" "$c" "$f0" "$f1" 2>&1); then
            echo "$out" | sed 's/^/   stats: /'
        else
            bad "moe-$c: stats: $out"
        fi
    done
elif [ "$want_moe" -eq 1 ]; then
    echo "SKIP (c): no $PRELOAD (built without NCCL support?)"
fi

if [ "$ran" -eq 0 ]; then
    echo "SKIP: nothing to run (no GPU build)"
    exit 77
fi
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures job(s) failed"
    exit 1
fi
echo "PASS: Squeeze under PyTorch + NCCL ($ran jobs)"
exit 0

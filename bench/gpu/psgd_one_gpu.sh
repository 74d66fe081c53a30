#!/bin/sh
# PowerSGD's cost on one GPU: the DDP transformer (examples/pytorch/ddp_train.py, 110M parameters)
# at world size 1, so that a step's time is the model's plus the hook's compression (the NCCL
# all-reduces of one rank move nothing), PyTorch's powerSGD_hook against Squeeze's DDP hook
# (SQZ_METHOD=powersgd) at the same ranks, with a dense step for reference.  One JSON file per
# run in OUTDIR; a table on standard output.
#   bench/gpu/psgd_one_gpu.sh BUILDDIR OUTDIR [RANK...]      (default ranks: 4 32 128)
# DDP_ARGS: extra ddp_train.py arguments (default "--steps 40 --bf16").
set -u
B=$(cd "$1" && pwd)
OUT=$2
shift 2
S=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
export PYTHONPATH="$S/python${PYTHONPATH:+:$PYTHONPATH}" SQUEEZE_LIB="$B/.libs/libsqueeze.so"
T="torchrun --standalone --nproc_per_node=1 $S/examples/pytorch/ddp_train.py ${DDP_ARGS:---steps 40 --bf16}"
run() { # NAME ARGS...
    name=$1
    shift
    # shellcheck disable=SC2086 # T is a word list on purpose
    $T "$@" --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1 || echo "$name: FAILED (see $OUT/$name.log)"
}
run dense --comm dense
for r in ${*:-4 32 128}; do
    run torch-powersgd$r --comm torch-powersgd --powersgd-rank "$r" --powersgd-start 2
    run hook-powersgd$r --comm squeeze --sqz METHOD=powersgd --sqz POWERSGD_RANK="$r" \
        --sqz POWERSGD_START_STEPS=2 --sqz-stats "$OUT/hook-powersgd$r.stats.json"
done
python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    if f.endswith(".stats.json"):
        continue
    rows[os.path.basename(f)[:-5]] = json.load(open(f))
dense = rows.get("dense", {}).get("mean_step_ms")
print("| run | mean step (ms) | over dense (ms) | final loss |")
print("|---|---|---|---|")
for name, r in rows.items():
    ms = r.get("mean_step_ms")
    over = "" if dense is None or ms is None else "%.1f" % (ms - dense)
    print("| %s | %.1f | %s | %.4f |" % (name, ms, over, r.get("final_loss", float("nan"))))
PY

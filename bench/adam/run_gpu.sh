#!/bin/sh
# The one-GPU runs of bench/adam/adam_sim.py behind the issue's goals: the DDP example's 110M
# transformer (vocab 32768, d 768, 12 layers, 12 heads, seq 256), W = 4 simulated workers of 8
# sequences each, 1000 steps, AdamW's settings of ddp_train.py (lr 3e-4, weight decay 0.1, clip
# 1.0; lr warm-up 50 steps), bf16 autocast of the forward, the mirror exchange on the device;
# freeze_step and var_freeze_step 150 (15 %).
#   bench/adam/run_gpu.sh OUT_DIR OPT...      (OPT: adamw onebit zeroone grad-sign)
# RUN_LIMIT bounds each run in seconds; SIM_ARGS adds or overrides arguments (e.g. "--steps 20 --d-model 64" for a smoke test);
# PYTHON picks the interpreter (default: the device image's /opt/torch/.venv, else python3).
set -u
out=${1:?usage: run_gpu.sh OUT_DIR OPT...}
shift
cd "$(dirname "$0")/../.."
mkdir -p "$out"
py=${PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$py" ] || py=python3
# The runs share the GPU at the same time (each is bound by its Python threads' kernel launches,
# not by the GPU), each within RUN_LIMIT seconds (a run cut short leaves NAME.json.partial).
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
for opt in "$@"; do
    name=gpt110m-$opt-W4
    # shellcheck disable=SC2086 # SIM_ARGS is a list of words
    timeout "${RUN_LIMIT:-3600}" "$py" bench/adam/adam_sim.py --device "${DEVICE:-cuda}" \
        --exchange mirror --model gpt --vocab 32768 --d-model 768 --layers 12 --heads 12 \
        --seq 256 --batch 8 --steps 1000 --lr 3e-4 --warmup 50 --weight-decay 0.1 --bf16 \
        --threads 4 --workers 4 --freeze-step 150 --var-freeze-step 150 --opt "$opt" \
        --name "$name" ${SIM_ARGS:-} --out "$out/$name.json" >"$out/$name.log" 2>&1 &
done
wait
for opt in "$@"; do
    name=gpt110m-$opt-W4
    grep RESULT "$out/$name.log" || { echo "FAILED or cut short: $name"; tail -n 3 "$out/$name.log"; }
done

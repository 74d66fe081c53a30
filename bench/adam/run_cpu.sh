#!/bin/sh
# The CPU matrix of bench/adam/adam_sim.py: the C example's MLP task and a small copy of the DDP
# example's transformer, W = 2, 4, 8 simulated workers, every optimizer, over the library itself
# (squeeze.LocalGroup); then bench/adam/report.py writes the loss curves (PNG) and the table.
#   bench/adam/run_cpu.sh OUT_DIR [STEPS_GPT [STEPS_MLP]]      (from the source tree, built)
# Debian's python3-torch uses the reference BLAS unless an optimized one is installed: with
# libopenblas0-pthread the transformer runs about 6x faster.
set -eu
out=${1:?usage: run_cpu.sh OUT_DIR [STEPS_GPT [STEPS_MLP]]}
steps_gpt=${2:-400}
steps_mlp=${3:-600}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export SQUEEZE_LIB=${SQUEEZE_LIB:-$PWD/.libs/libsqueeze.so}
for model in mlp gpt; do
    steps=$steps_mlp
    [ "$model" = gpt ] && steps=$steps_gpt
    for w in 2 4 8; do
        for opt in adamw onebit zeroone grad-sign grad-topk grad-quant; do
            f="$out/$model-$opt-W$w.json"
            [ -s "$f" ] && continue
            /usr/bin/python3 bench/adam/adam_sim.py --model "$model" --workers "$w" \
                --steps "$steps" --opt "$opt" --out "$f" >"$out/$model-$opt-W$w.log" 2>&1 ||
                echo "FAILED: $model $opt W=$w (see $out/$model-$opt-W$w.log)"
            grep RESULT "$out/$model-$opt-W$w.log" | cut -c1-160 || true
        done
    done
done
/usr/bin/python3 bench/adam/report.py "$out"

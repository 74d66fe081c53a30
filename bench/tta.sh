#!/bin/sh
# Time-to-accuracy on the emulated cluster: examples/sqz_bow_train on 4 hosts (one rank each) at
# each link rate, dense against each method under LD_PRELOAD.  Writes OUT/tta-RATE-METHOD.csv
# (step, seconds, loss, test accuracy) and OUT/tta-RATE-METHOD.txt, then plots and tabulates with
# bench/plot_tta.py.  Run from the build tree (needs root for the network namespaces).
#
#   bench/tta.sh [OUT] [RATES] [STEPS]      defaults: bench/results "1gbit 10gbit" 300
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=${SQZ_BUILD:-$top}
out=${1:-$top/bench/results}
rates=${2:-"1gbit 10gbit"}
steps=${3:-300}
target=${SQZ_TTA_TARGET:-0.90}
mkdir -p "$out"
lib="$build/.libs/libsqueeze_mpi.so"
prog="$build/examples/sqz_bow_train"
[ -x "$prog" ] && [ -f "$lib" ] || { echo "build first (make): need $prog and $lib"; exit 1; }

# name | environment
methods="dense|
topk|SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.01
quant|SQZ_METHOD=quant SQZ_QUANT_BITS=4
sign|SQZ_METHOD=sign"

for rate in $rates; do
    echo "$methods" | while IFS='|' read -r name envs; do
        [ -n "$name" ] || continue
        echo "== $rate $name"
        if [ "$name" = dense ]; then
            pre=""
        else
            pre="LD_PRELOAD=$lib $envs SQZ_STATS=json:$out/tta-$rate-$name-stats-%r.json"
        fi
        # shellcheck disable=SC2086
        env $pre "$here/netcluster" --hosts 4 --ranks-per-host 1 --rate "$rate" --timeout 600 -- \
            "$prog" --steps "$steps" --log "$out/tta-$rate-$name.csv" \
            --json "$out/tta-$rate-$name.json" </dev/null | tee "$out/tta-$rate-$name.txt"
    done
done
/usr/bin/python3 "$here/plot_tta.py" --target "$target" --out "$out" "$out"/tta-*-*.csv

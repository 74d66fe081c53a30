#!/usr/bin/env bash
# bench/model_validate.sh: the cost model and the goals of issue 17 on the emulated cluster
# (docs/performance.md, "4 to 16 hosts at 100 Mbit/s, incast, and the cost model").
# 16, 8 and 4 hosts, then 2 hosts x 2 ranks, each at 100 Mbit/s, 16 MiB all-reduces: the methods
# with the link's rate stated (for the ideal), sign with every send at once, top-k with entropy
# coding, and the three methods under SQZ_EXCHANGE_MODEL=time with everything measured.  Writes
# bench/results/model-*.json; bench/model_table.py turns them into the tables.  Needs root
# (network namespaces); about 8 minutes.  Nothing else should run on the machine meanwhile.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${BUILD:-$here/..}
out=${OUT:-$here/results}
mkdir -p "$out"
T="EXCHANGE_MODEL=time,LINK_GBPS=0,LOG=info"
N="LINK_GBPS=0.1"
run() { # NAME NETCLUSTER-ARGS... -- METHODS
    local name=$1; shift
    local args=()
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    "$here/netcluster" "${args[@]}" --rate 100mbit --timeout 900 -- "$build/squeeze_bench" \
        --no-kernels --methods "$1" --min 16M --max 16M --iters 3 --json "$out/$name.json"
}
for h in 16 8 4; do
    run "model-h$h-100mbit-16M" --hosts "$h" -- "topk:TOPK_DENSITY=0.01,$N;quant:QUANT_BITS=4,$N;sign:$N;sign:P2P_WINDOW=0,$N;topk:TOPK_DENSITY=0.01,ENTROPY=auto,$N;topk:TOPK_DENSITY=0.01,$T;quant:QUANT_BITS=4,$T;sign:$T"
done
# (2 ranks a host: the sharded hierarchy, its stages inside the host timed once)
TH="$T,INTRA_GBPS=0"
run model-h2x2-100mbit-16M --hosts 2 --ranks-per-host 2 -- "topk:TOPK_DENSITY=0.01,$TH;quant:QUANT_BITS=4,$TH;sign:$TH"
python3 "$here/model_table.py" "$out"/model-h16-100mbit-16M.json "$out"/model-h8-100mbit-16M.json \
    "$out"/model-h4-100mbit-16M.json "$out"/model-h2x2-100mbit-16M.json

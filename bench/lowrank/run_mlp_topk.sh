#!/bin/sh
# Uniform top-k densities against L-GreCo top-k on examples/sqz_mlp_train (4 ranks, 300 steps,
# examples/layouts/sqz_mlp_train.layout), one line per run: final loss, test accuracy, rank 0's
# bytes_wire, the last adapt levels (ppm).  Usage: SEEDS="1 2 3" bench/lowrank/run_mlp_topk.sh
# (logs and stats in /tmp/tk-*).
cd "$(dirname "$0")/../.."
M="mpirun --allow-run-as-root --oversubscribe -np 4 --bind-to none --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none"
L=examples/layouts/sqz_mlp_train.layout
run() { name=$1; shift
  $M -x LD_PRELOAD=$PWD/.libs/libsqueeze_mpi.so -x SQZ_METHOD=topk -x SQZ_LAYOUT=$L -x SQZ_STATS=json:/tmp/tk-$name-%r.json "$@" examples/sqz_mlp_train --steps 300 --seed $SEED --json /tmp/tk-$name.json > /tmp/tk-$name.log 2>&1
  /usr/bin/python3 - "$name" <<'PY'
import json,sys
n=sys.argv[1]; j=json.load(open(f"/tmp/tk-{n}.json")); s=json.load(open(f"/tmp/tk-{n}-0.json"))
a=s.get("adapt",[])
print(f"{n:22s} loss {j['loss']:.4f} acc {j['accuracy']:.4f} wire {s['bytes_wire']/1e6:8.3f} MB  {a[0]['levels'] if a else ''}")
PY
}
for SEED in ${SEEDS:-1}; do
run d0.005 -x SQZ_TOPK_DENSITY=0.005
run d0.01 -x SQZ_TOPK_DENSITY=0.01
run d0.02 -x SQZ_TOPK_DENSITY=0.02
run lgreco0.01 -x SQZ_TOPK_DENSITY=0.01 -x SQZ_ADAPT=lgreco -x SQZ_ADAPT_PERIOD=50
run lgreco0.02 -x SQZ_TOPK_DENSITY=0.02 -x SQZ_ADAPT=lgreco -x SQZ_ADAPT_PERIOD=50
done

#!/bin/sh
# Reruns every benchmark of docs/performance.md (`make bench`).  Needs root for the emulated
# cluster.  Results land in OUT (default bench/results): JSON/CSV/PNG plus summary.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
build=${SQZ_BUILD:-$top}
out=${1:-$top/bench/results}
mkdir -p "$out"
lib="$build/.libs/libsqueeze_mpi.so"
# The launcher: $MPIRUN (make bench passes the configured one), Open MPI's or MPICH's.
. "$top/scripts/mpi_launch.sh"
mpi_launch_init

echo "== machine"
{ uname -srm; nproc; grep -m1 'model name' /proc/cpuinfo || true; free -g | sed -n 2p; } | tee "$out/machine.txt"

echo "== kernels (1 rank, 64 MiB)"
mpi_launch -np 1 "$build/squeeze_bench" --no-allreduce --json "$out/kernels.json" | tee "$out/kernels.txt"

echo "== passthrough cost of an 8-byte all-reduce (2 ranks): MPI_Allreduce through the preloaded"
echo "   interposer against PMPI_Allreduce, alternating in one process; last line: no preload (sanity)"
: >"$out/latency.txt"
for i in 1 2 3; do
    mpi_launch LD_PRELOAD="$lib" SQZ_METHOD=quant -np 2 "$build/bench/sqz_latency_bench" |
        sed 's/^/preload /' >>"$out/latency.txt"
done
mpi_launch -np 2 "$build/bench/sqz_latency_bench" | sed 's/^/plain /' >>"$out/latency.txt"
cat "$out/latency.txt"

methods="topk:TOPK_DENSITY=0.01;topk:TOPK_DENSITY=0.01,TOPK_SELECT=sampled;quant:QUANT_BITS=4;quant:QUANT_BITS=8;sign"
# The same with the pipelined point-to-point exchanges switched off, side by side in one run.
both="$methods;topk:TOPK_DENSITY=0.01,PIPELINE=0;quant:QUANT_BITS=4,PIPELINE=0;quant:QUANT_BITS=8,PIPELINE=0;sign:PIPELINE=0"
echo "== 64 MiB all-reduce, 4 hosts at 1 Gbit/s"
"$here/netcluster" --hosts 4 --rate 1gbit --timeout 900 -- "$build/squeeze_bench" --methods "$both" \
    --min 64M --max 64M --iters 5 --json "$out/ar-1gbit-64M.json" | tee "$out/ar-1gbit-64M.txt"
echo "== 16 MiB all-reduce, 4 hosts at 100 Mbit/s"
"$here/netcluster" --hosts 4 --rate 100mbit --timeout 900 -- "$build/squeeze_bench" --methods "$both" \
    --min 16M --max 16M --iters 3 --json "$out/ar-100mbit-16M.json" | tee "$out/ar-100mbit-16M.txt"
echo "== all sizes, 4 hosts at 1 Gbit/s"
"$here/netcluster" --hosts 4 --rate 1gbit --timeout 1800 -- "$build/squeeze_bench" --methods "$methods" \
    --min 4K --max 256M --iters 5 --no-kernels --json "$out/ar-1gbit-sweep.json" | tee "$out/ar-1gbit-sweep.txt"

echo "== time to accuracy"
SQZ_BUILD="$build" "$here/tta.sh" "$out" "1gbit 10gbit" 300

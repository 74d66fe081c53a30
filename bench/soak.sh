#!/bin/sh
# The churn soak of docs/performance.md: 1,000,000 intercepted all-reduces whose buffers move at
# every call (a new allocation at a rank-dependent offset; no address repeats), 4 ranks, a step
# of 5 buffers (one size repeated), for a few methods.  Reports per method: replicas identical
# (checked every 500 steps), calls that fell back, the state memory at its peak and at the end
# (the live set), residuals dropped, and RSS after the first 10 % of the run and its growth after.
#   bench/soak.sh BUILD_DIR OUT_DIR [CALLS]   (run from the source tree; needs mpirun)
set -eu
build=${1:?build dir}
out=${2:?output dir}
calls=${3:-1000000}
mkdir -p "$out"
. "$(dirname "$0")/../scripts/mpi_launch.sh" # Open MPI's mpirun or MPICH's mpiexec (MPIRUN)
mpi_launch_init
echo "| method | calls | replicas | fallbacks | state peak (KiB) | live set (KiB) | residuals dropped | RSS after 10 % (KiB) | RSS growth after (KiB) | seconds |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for m in quant topk sign; do
    t0=$(date +%s)
    mpi_launch LD_PRELOAD="$build/.libs/libsqueeze_mpi.so" SQZ_METHOD=$m SQZ_MIN_BYTES=0 \
        SQZ_STATS="json:$out/$m-%r.json" -np 4 \
        "$build/tests/mpi/mpi_churn" --calls "$calls" --sizes 4000,1000,1000,1000,2000 \
        --check-every 500 --rss-out "$out/$m-rss.txt" >"$out/$m.log" 2>&1
    t=$(($(date +%s) - t0))
    j="$out/$m-0.json"
    get() { sed -n "s/^  \"$1\": \([-0-9.e+]*\),*$/\1/p" "$j" | head -n 1; }
    line=$(grep '^churn:' "$out/$m.log")
    rep=$(echo "$line" | sed -n 's/.*replicas \([a-z]*\).*/\1/p')
    rss=$(echo "$line" | sed -n 's/.*RSS after 10%: \([0-9]*\) KiB.*/\1/p')
    grow=$(echo "$line" | sed -n 's/.*growth after it: \([0-9]*\) KiB.*/\1/p')
    echo "| $m | $(get calls_compressed) + $(get calls_warmup) warm-up | $rep | $(get calls_fallback) | $(($(get state_bytes_peak) / 1024)) | $(($(get state_bytes) / 1024)) | $(get residuals_dropped) | $rss | $grow | $t |"
done

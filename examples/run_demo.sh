#!/bin/sh
# The Squeeze demo: the same unmodified MPI training job (examples/sqz_mlp_train), first dense,
# then with libsqueeze_mpi.so preloaded and SQZ_METHOD=topk, quant and sign, and one table to
# compare loss, accuracy, time, compression ratio and replica consistency.
#
# Usage: examples/run_demo.sh [--np N] [--steps N] [BUILD_DIR]
#   BUILD_DIR  the build tree (holding .libs/libsqueeze_mpi.so and examples/sqz_mlp_train);
#              default: $SQZ_BUILD, else the current directory, else the script's source tree.
#   --np N     ranks (default 4)       --steps N  training steps (default 300)
# Environment: MPIRUN (default: the launcher BUILD was configured with, Open MPI's mpirun or MPICH's
# mpiexec; scripts/mpi_launch.sh), SQZ_DEMO_DIR (where logs and stats go; default a new temporary
# directory, kept and printed at the end), SQZ_LOG (forwarded to the ranks).
# Exits non-zero when a run fails or a run's replicas differ.
set -u

NP=4
STEPS=300
BUILD=
while [ $# -gt 0 ]; do
    case $1 in
    --np) NP=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "run_demo.sh: unknown option $1" >&2; exit 2 ;;
    *) BUILD=$1; shift ;;
    esac
done

# Where the build is: the first candidate that holds the interposer.
script_dir=$(cd "$(dirname "$0")" && pwd)
if [ -z "$BUILD" ]; then
    for d in "${SQZ_BUILD:-}" "$PWD" "$script_dir/.."; do
        if [ -n "$d" ] && [ -f "$d/.libs/libsqueeze_mpi.so" ]; then
            BUILD=$d
            break
        fi
    done
fi
if [ -z "$BUILD" ] || [ ! -f "$BUILD/.libs/libsqueeze_mpi.so" ]; then
    echo "run_demo.sh: no .libs/libsqueeze_mpi.so in '${BUILD:-$SQZ_BUILD, . or $script_dir/..}';" \
        "build first (./autogen.sh && ./configure && make) or name the build directory" >&2
    exit 2
fi
BUILD=$(cd "$BUILD" && pwd)
LIB="$BUILD/.libs/libsqueeze_mpi.so"
TRAIN="$BUILD/examples/sqz_mlp_train"
if [ ! -x "$TRAIN" ]; then
    echo "run_demo.sh: $TRAIN is missing (make builds it)" >&2
    exit 2
fi
# The launcher the build was configured with (its Makefile says), unless MPIRUN names one; the
# same launch flags as the test suite (scripts/mpi_launch.sh).
if [ -z "${MPIRUN:-}" ] && [ -f "$BUILD/Makefile" ]; then
    MPIRUN=$(sed -n 's/^MPIRUN = //p' "$BUILD/Makefile")
fi
MPIRUN=${MPIRUN:-mpirun}
command -v "$MPIRUN" >/dev/null 2>&1 || { echo "run_demo.sh: $MPIRUN not found" >&2; exit 2; }
. "$script_dir/../scripts/mpi_launch.sh"
mpi_launch_init || exit 2
OUT=${SQZ_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sqz-demo.XXXXXX")}
mkdir -p "$OUT" || exit 2
MPI_TIMEOUT=
command -v timeout >/dev/null 2>&1 && MPI_TIMEOUT=600

# A number from a flat JSON file ("key": value lines, as both writers produce).
json_num() {
    sed -n "s/^ *\"$2\": \([-0-9.eE+]*\),*\$/\1/p" "$1" | head -n 1
}

# run LABEL [VAR=value ...]: one training run; the VAR=value settings reach every rank, and any
# SQZ_ setting turns on the interposer.
failed=0
rows=
run() {
    label=$1
    shift
    echo "== $label: $NP ranks, $STEPS steps${*:+, $*}"
    preload=
    for kv in "$@"; do
        case $kv in SQZ_*) preload=yes ;; esac
    done
    if [ -n "$preload" ]; then
        set -- "$@" LD_PRELOAD="$LIB" SQZ_STATS="json:$OUT/$label-%r.json"
        [ -z "${SQZ_LOG:-}" ] || set -- "$@" SQZ_LOG
    fi
    mpi_launch "$@" -np "$NP" "$TRAIN" --steps "$STEPS" --json "$OUT/$label-train.json" \
        >"$OUT/$label.log" 2>&1
    rc=$?
    sed 's/^/   /' "$OUT/$label.log" | grep -v '^   step '
    loss=- acc=- secs=- ratio=- replicas=-
    if [ "$rc" -ne 0 ]; then
        echo "   run failed with status $rc (log: $OUT/$label.log)"
        failed=1
        replicas="FAILED($rc)"
    elif [ -f "$OUT/$label-train.json" ]; then
        loss=$(printf '%.4f' "$(json_num "$OUT/$label-train.json" loss)")
        acc=$(printf '%.4f' "$(json_num "$OUT/$label-train.json" accuracy)")
        secs=$(printf '%.2f' "$(json_num "$OUT/$label-train.json" seconds)")
        if grep -q '"replicas_identical": true' "$OUT/$label-train.json"; then
            replicas=identical
        else
            replicas=DIFFER
            failed=1
        fi
    fi
    if [ -z "$preload" ]; then
        ratio=1.0
    elif [ -f "$OUT/$label-0.json" ]; then
        ratio=$(awk -v i="$(json_num "$OUT/$label-0.json" bytes_in)" \
            -v w="$(json_num "$OUT/$label-0.json" bytes_wire)" \
            'BEGIN { if (w > 0) printf "%.1f", i / w; else print "-" }')
    fi
    rows="$rows$label $loss $acc $secs $ratio $replicas
"
}

run dense
run topk SQZ_METHOD=topk SQZ_TOPK_DENSITY=0.01
run quant SQZ_METHOD=quant SQZ_QUANT_BITS=4
run sign SQZ_METHOD=sign

echo
echo "sqz_mlp_train, $NP ranks, $STEPS steps (compression ratio: bytes_in / bytes_wire of rank 0)"
printf '%-8s %11s %10s %8s %12s  %s\n' method "final loss" "test acc" "wall s" "compression" replicas
printf '%s' "$rows" | while read -r label loss acc secs ratio replicas; do
    printf '%-8s %11s %10s %8s %11sx  %s\n' "$label" "$loss" "$acc" "$secs" "$ratio" "$replicas"
done
echo
echo "logs and stats: $OUT"
if [ "$failed" -ne 0 ]; then
    echo "run_demo.sh: some run failed (see above)" >&2
    exit 1
fi
exit 0

#!/bin/sh
# Low-rank (PowerSGD) and layer-adaptive (L-GreCo) compression of the C training example
# examples/sqz_mlp_train (MLP 64-256-256-10, one flat MPI_Allreduce of 85,002 gradients per step)
# on the CPU path, and one table: final train loss, test accuracy, wire bytes per rank, and the
# L-GreCo choice.
#
# Usage: bench/lowrank/run_mlp.sh [--np N] [--steps N] [--period P] [--seeds "S ..."]
#                                 [--ranks "R ..."] [--rank R] [BUILD_DIR]
#   --np N         ranks (default 4)
#   --steps N      training steps (default 300)
#   --period P     SQZ_ADAPT_PERIOD of the L-GreCo runs (default 50)
#   --seeds "..."  seeds of the job (--seed); every configuration runs once per seed and the table
#                  shows the mean over the seeds (default "1")
#   --ranks "..."  uniform PowerSGD ranks with the layout file (default "1 2 4")
#   --rank R       SQZ_POWERSGD_RANK of the L-GreCo and the no-layout runs (default 4, the
#                  library's default)
#   BUILD_DIR      the build tree (default: the repository this script is in)
# Environment: MPIRUN (default mpirun), SQZ_BENCH_DIR (logs and stats; default a new temporary
# directory, printed at the end), PYTHON (default /usr/bin/python3).
#
# Configurations:
#   dense              no interposer
#   psgd-rR            SQZ_METHOD=powersgd SQZ_POWERSGD_RANK=R with examples/layouts/sqz_mlp_train.layout
#   lgreco-rR          the same at the default rank, plus SQZ_ADAPT=lgreco SQZ_ADAPT_PERIOD=P
#   psgd-rR-nolayout   powersgd without a layout: one 291 x 292 pseudo-layer over the whole buffer
#   lgreco-rR-nolayout the same with SQZ_ADAPT=lgreco (one layer: nothing to distribute)
# Columns: loss = mean train loss of the last 10 steps (the job's "final train loss"); acc = test
# accuracy; wire MB = bytes_wire of rank 0 over the whole run (dense start included); B/call =
# bytes_wire per call after the POWERSGD_START_STEPS dense calls; vs r = wire bytes relative to
# the uniform run at the L-GreCo rank; adapt = the last L-GreCo record of rank 0 (levels per layer
# in layout order, bytes per call chosen / uniform, error / budget).
set -u

NP=4
STEPS=300
PERIOD=50
SEEDS=1
RANKS="1 2 4"
RANK=4
BUILD=
while [ $# -gt 0 ]; do
    case $1 in
    --np) NP=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --period) PERIOD=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --ranks) RANKS=$2; shift 2 ;;
    --rank) RANK=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "run_mlp.sh: unknown option $1" >&2; exit 2 ;;
    *) BUILD=$1; shift ;;
    esac
done

script_dir=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$script_dir/../.." && pwd)
BUILD=$(cd "${BUILD:-$SRC}" && pwd) || exit 2
LIB="$BUILD/.libs/libsqueeze_mpi.so"
TRAIN="$BUILD/examples/sqz_mlp_train"
LAYOUT="$SRC/examples/layouts/sqz_mlp_train.layout"
PYTHON=${PYTHON:-/usr/bin/python3}
MPIRUN=${MPIRUN:-mpirun}
for f in "$LIB" "$TRAIN" "$LAYOUT"; do
    [ -e "$f" ] || { echo "run_mlp.sh: missing $f (build first: make)" >&2; exit 2; }
done
command -v "$MPIRUN" >/dev/null 2>&1 || { echo "run_mlp.sh: $MPIRUN not found" >&2; exit 2; }
OUT=${SQZ_BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/sqz-lowrank.XXXXXX")}
mkdir -p "$OUT" || exit 2
# Private copies: every configuration runs the same library and job even if the build tree is
# rebuilt meanwhile (libsqueeze_mpi.so depends on no other Squeeze library).
cp -L "$LIB" "$OUT/libsqueeze_mpi.so" && cp "$TRAIN" "$OUT/sqz_mlp_train" || exit 2
LIB="$OUT/libsqueeze_mpi.so"
TRAIN="$OUT/sqz_mlp_train"

# The launch flags of tests/mpi/common.sh.
FLAGS="--oversubscribe --bind-to none --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none"
[ "$(id -u)" = 0 ] && FLAGS="$FLAGS --allow-run-as-root"
TIMEOUT=
command -v timeout >/dev/null 2>&1 && TIMEOUT="timeout 900"

# Only the variables a configuration sets reach the ranks.
for v in $(env | sed -n 's/^\(SQZ_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done

failed=0
: >"$OUT/runs.txt"
# run LABEL [VAR=value ...]: one training run per seed; any SQZ_ setting preloads the interposer.
run() {
    label=$1
    shift
    for seed in $SEEDS; do
        tag="$label-s$seed"
        xs= preload=
        for kv in "$@"; do
            xs="$xs -x $kv"
            case $kv in SQZ_*) preload="-x LD_PRELOAD=$LIB" ;; esac
        done
        [ -n "$preload" ] && xs="$xs -x SQZ_STATS=json:$OUT/$tag-%r.json"
        echo "== $tag: $NP ranks, $STEPS steps${*:+, $*}" >&2
        # shellcheck disable=SC2086
        $TIMEOUT "$MPIRUN" $FLAGS -np "$NP" $preload $xs "$TRAIN" --steps "$STEPS" \
            --seed "$seed" --json "$OUT/$tag-train.json" >"$OUT/$tag.log" 2>&1
        rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "   run failed with status $rc (log: $OUT/$tag.log)" >&2
            tail -n 5 "$OUT/$tag.log" >&2
            failed=1
        elif [ -n "$preload" ] && [ ! -f "$OUT/$tag-0.json" ]; then
            echo "   no stats from the interposer (log: $OUT/$tag.log)" >&2
            failed=1
        fi
        echo "$label $seed $rc $*" >>"$OUT/runs.txt"
    done
}

run dense
for r in $RANKS; do
    run "psgd-r$r" SQZ_METHOD=powersgd SQZ_POWERSGD_RANK="$r" SQZ_LAYOUT="$LAYOUT"
done
run "lgreco-r$RANK" SQZ_METHOD=powersgd SQZ_POWERSGD_RANK="$RANK" SQZ_LAYOUT="$LAYOUT" \
    SQZ_ADAPT=lgreco SQZ_ADAPT_PERIOD="$PERIOD"
run "psgd-r$RANK-nolayout" SQZ_METHOD=powersgd SQZ_POWERSGD_RANK="$RANK"
run "lgreco-r$RANK-nolayout" SQZ_METHOD=powersgd SQZ_POWERSGD_RANK="$RANK" \
    SQZ_ADAPT=lgreco SQZ_ADAPT_PERIOD="$PERIOD"

echo
echo "sqz_mlp_train, $NP ranks, $STEPS steps, seeds: $SEEDS (means over seeds; adapt: last seed)"
"$PYTHON" - "$OUT" "$NP" "$STEPS" "psgd-r$RANK" <<'EOF'
import json, os, sys
out, np_, steps, ref = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
START = 10   # SQZ_POWERSGD_START_STEPS default: dense calls counted in bytes_wire
rows = {}
order = []
for line in open(os.path.join(out, "runs.txt")):
    f = line.split()
    label, seed, rc, env = f[0], f[1], int(f[2]), f[3:]
    if label not in rows:
        rows[label] = []
        order.append(label)
    rec = {"rc": rc, "env": env}
    try:
        t = json.load(open(os.path.join(out, f"{label}-s{seed}-train.json")))
        rec.update(loss=t["loss"], acc=t["accuracy"], same=t["replicas_identical"])
    except (OSError, ValueError, KeyError):
        pass
    st = os.path.join(out, f"{label}-s{seed}-0.json")
    if os.path.exists(st):
        s = json.load(open(st))
        rec["wire"] = s["bytes_wire"]
        rec["calls"] = s["calls_compressed"]
        # every rank's bytes_wire: the table shows rank 0's, flag any difference
        w = set()
        for r in range(np_):
            try:
                w.add(json.load(open(os.path.join(out, f"{label}-s{seed}-{r}.json")))["bytes_wire"])
            except (OSError, ValueError, KeyError):
                pass
        rec["wire_same"] = len(w) == 1
        ad = s.get("adapt") or []
        if ad:
            rec["adapt"] = ad[-1]
    elif any(e.startswith("SQZ_") for e in env):
        rec["rc"] = rec["rc"] or -1  # the interposer did not run (no stats): not a result
    else:
        rec["wire"] = 4.0 * 85002 * steps  # dense: the buffer once per step (no interposer)
        rec["calls"] = steps
        rec["wire_same"] = True
    rows[label].append(rec)

def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None

def fmt(x, f):
    return "-" if x is None else f % x

refwire = mean([r.get("wire") for r in rows.get(ref, []) if r["rc"] == 0 and r.get("same")])
hdr = "%-20s %8s %8s %9s %9s %7s  %s" % ("config", "loss", "acc", "wire MB", "B/call", "vs " + ref.split("-")[1], "adapt (levels; B/call chosen/uniform; error/budget)")
print(hdr)
print("-" * len(hdr))
for label in order:
    # failed runs, runs without stats and runs whose replicas or ranks' bytes differ are left out
    bad = [r for r in rows[label] if r["rc"] != 0 or not r.get("same", False)
           or not r.get("wire_same", False)]
    rs = [r for r in rows[label] if r not in bad]
    loss = mean([r.get("loss") for r in rs])
    acc = mean([r.get("acc") for r in rs])
    wire = mean([r.get("wire") for r in rs])
    bpc = None
    if label == "dense":
        bpc = 4.0 * 85002
    elif wire is not None:
        bpc = mean([(r["wire"] - START * 4.0 * 85002) / (r["calls"] - START) for r in rs
                    if r.get("calls", 0) > START])
    rel = None if (refwire is None or wire is None or label == "dense") else wire / refwire
    ad = ""
    a = rs[-1].get("adapt") if rs else None
    if a:
        ad = "%s; %d/%d; %.4g/%.4g; %d solves" % (a["levels"], a["bytes"], a["bytes_uniform"],
                                                   a["error"], a["budget"], a["solves"])
    if bad:
        ad += "  [%d run(s) left out: failed, no stats, or replicas/bytes differ]" % len(bad)
    print("%-20s %8s %8s %9s %9s %7s  %s" % (label, fmt(loss, "%.4f"), fmt(acc, "%.4f"),
          fmt(None if wire is None else wire / 1e6, "%.3f"), fmt(bpc, "%.0f"),
          fmt(rel, "%.3f"), ad))
if len(rows[order[0]]) > 1:
    print("\nper seed (loss / acc):")
    for label in order:
        print("%-20s %s" % (label, "  ".join("%s/%s" % (fmt(r.get("loss"), "%.4f"), fmt(r.get("acc"), "%.4f")) for r in rows[label])))
EOF
echo
echo "logs and stats: $OUT"
[ "$failed" -eq 0 ] || { echo "run_mlp.sh: some run failed (see above)" >&2; exit 1; }
exit 0

"""Which per-layer statistic predicts what compressing a layer costs the loss?

    /usr/bin/python3 bench/lowrank/lgreco_study.py OUTDIR [--model resnet] [--method powersgd]
        [--ranks 1,2,4,8] [--at 100,200,300] [--horizon 30] [--jobs 2] [-- lgreco_sim.py args]

1. A dense run of bench/lowrank/lgreco_sim.py records, every 20 steps, each layer's gradient
   statistics at every candidate level (the error ||g - C_k(g)||^2, best rank-k for PowerSGD,
   summed over workers and probes, and ||g||^2), and saves checkpoints at the --at steps.
2. From each checkpoint, a dense continuation of --horizon steps, and one continuation per
   (layer, level) that compresses that layer alone at that level through the library
   (--only-layer; every other element summed exactly).  Its held-out loss minus the dense
   continuation's is the layer's impact at that level; the impacts are averaged over the
   checkpoints.  Short continuations from common states keep the impact above the chaos of
   whole training runs, whose final losses differ by more between seeds than one layer moves
   them.
3. For each candidate statistic, the Spearman rank correlation between the statistic and the
   impact over every (layer, level), and within each layer across levels:
     error      ||g - C(g)||^2, what L-GreCo specifies (the library's objective)
     relative   ||g - C(g)||^2 / ||g||^2, the error relative to the layer's gradient
     per_elem   ||g - C(g)||^2 / elements, the error per parameter
   A statistic that predicts the impact across layers is the one whose sum the solver may trade
   between layers.
Writes OUTDIR/study.json and prints the tables.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "lgreco_sim.py")


def run(out, name, args):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        with open(os.path.join(out, name + ".log"), "w") as log:
            subprocess.run([sys.executable, SIM, "--name", name, "--out", path] + args,
                           stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    with open(path) as f:
        return json.load(f)


def ranks_of(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(x, y):
    if len(x) < 3:
        return float("nan")
    rx, ry = ranks_of(x), ranks_of(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--method", default="powersgd")
    ap.add_argument("--level-param", default="POWERSGD_RANK")
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--min-rate", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--at", default="100,200,300", help="checkpoint steps of the dense run")
    ap.add_argument("--horizon", type=int, default=30, help="steps of each continuation")
    a, rest = ap.parse_known_args()  # the rest (after --) goes to lgreco_sim.py
    a.rest = [x for x in rest if x != "--"]
    os.makedirs(a.out, exist_ok=True)
    common = ["--model", a.model] + a.rest
    levels = [int(r) for r in a.ranks.split(",")]
    ats = [int(x) for x in a.at.split(",")]
    ck = os.path.join(a.out, "ck-{step}.pt")
    dense = run(a.out, "dense", common + ["--probe-every", "20", "--probe-ranks", a.ranks,
                                          "--steps", str(max(ats) + 1), "--save-at", a.at,
                                          "--checkpoint", ck])
    probe = dense["probe"]
    cont = ["--resume", "--steps", str(a.horizon)]
    # Compress from the first call of a continuation (PowerSGD's dense start would use it up).
    start = ["--sqz", "POWERSGD_START_STEPS=0"] if a.method == "powersgd" else []
    jobs = [(-1, -1, 0, f"dense-at{c}", common + cont + ["--checkpoint", ck.format(step=c)])
            for c in ats]
    for i, (rows, cols) in enumerate(probe["shapes"]):
        for j, k in enumerate(levels):
            r = min(k, rows, cols)
            if rows < 2 or (rows + cols) * r * a.min_rate >= rows * cols:
                continue  # summed exactly at this level: no impact to measure
            for c in ats:
                jobs.append((i, j, k, f"l{i}-k{k}-at{c}", common + cont + [
                    "--checkpoint", ck.format(step=c), "--method", a.method,
                    "--sqz", f"{a.level_param}={k}", "--only-layer", str(i)] + start))
    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda jb: (jb, run(a.out, jb[3], jb[4])), jobs))
    base = {jb[3].split("-at")[1]: r["eval_loss"] for jb, r in results if jb[0] < 0}
    impacts = {}
    for (i, j, k, name, _), r in results:
        if i >= 0:
            impacts.setdefault((i, j, k), []).append(r["eval_loss"] - base[name.split("-at")[1]])
    rows_out = []
    for (i, j, k), imp in sorted(impacts.items()):
        rows, cols = probe["shapes"][i]
        err, nn = probe["err"][i][j], probe["norm"][i]
        rows_out.append({"layer": i, "shape": [rows, cols], "level": k,
                         "impact": sum(imp) / len(imp), "impacts": imp,
                         "error": err, "relative": err / nn if nn > 0 else 0.0,
                         "per_elem": err / (rows * cols)})
    impact = [r["impact"] for r in rows_out]
    table = {}
    for stat in ("error", "relative", "per_elem"):
        xs = [r[stat] for r in rows_out]
        within = []
        for i in sorted({r["layer"] for r in rows_out}):
            sub = [r for r in rows_out if r["layer"] == i]
            if len(sub) >= 3:
                within.append(spearman([r[stat] for r in sub], [r["impact"] for r in sub]))
        table[stat] = {"spearman_all": spearman(xs, impact),
                       "spearman_within_mean": sum(within) / len(within) if within else None}
    print("dense continuations' eval_loss: " +
          ", ".join(f"at {c}: {v:.4f}" for c, v in sorted(base.items(), key=lambda x: int(x[0]))))
    print("| layer | shape | level | impact on eval loss | error | relative | per element |")
    print("|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['layer']} | {r['shape'][0]}x{r['shape'][1]} | {r['level']} | "
              f"{r['impact']:+.4f} | {r['error']:.3g} | {r['relative']:.3g} | "
              f"{r['per_elem']:.3g} |")
    print("\n| statistic | Spearman vs impact, all (layer, level) | mean within a layer |")
    print("|---|---|---|")
    for stat, t in table.items():
        w = t["spearman_within_mean"]
        print(f"| {stat} | {t['spearman_all']:.3f} | {'-' if w is None else f'{w:.3f}'} |")
    with open(os.path.join(a.out, "study.json"), "w") as f:
        json.dump({"dense_continuations": base, "at": ats, "horizon": a.horizon,
                   "rows": rows_out, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()

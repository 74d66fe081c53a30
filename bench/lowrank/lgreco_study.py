"""Which per-layer statistic predicts what compressing a layer costs the loss?

    /usr/bin/python3 bench/lowrank/lgreco_study.py OUTDIR [--model resnet] [--method powersgd]
        [--ranks 1,2,4,8] [--jobs 2] [lgreco_sim.py arguments after --]

1. A dense run of bench/lowrank/lgreco_sim.py records, every 20 steps, each layer's gradient
   statistics at every candidate level: the error ||g - C_k(g)||^2 (best rank-k for PowerSGD,
   summed over workers and probes) and ||g||^2.
2. One run per (layer, level) compresses that layer alone at that level through the library
   (--only-layer; every other element summed exactly): its held-out loss minus the dense run's
   is the layer's measured impact at that level.
3. For each candidate statistic, the Spearman rank correlation between the statistic and the
   impact over every (layer, level), and within each layer across levels:
     error      ||g - C(g)||^2, what L-GreCo specifies (SQZ_ADAPT_STAT=error)
     relative   ||g - C(g)||^2 / ||g||^2, the error relative to the layer's gradient
     per_elem   ||g - C(g)||^2 / elements, the error per parameter
   A statistic that predicts the impact across layers is the one whose sum the solver may trade
   between layers.
Writes OUTDIR/study.json and prints the table.
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
    ap.add_argument("rest", nargs="*", help="lgreco_sim.py arguments (after --)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    common = ["--model", a.model] + a.rest
    levels = [int(r) for r in a.ranks.split(",")]
    dense = run(a.out, "dense", common + ["--probe-every", "20", "--probe-ranks", a.ranks])
    probe = dense["probe"]
    jobs = []
    for i, (rows, cols) in enumerate(probe["shapes"]):
        for j, k in enumerate(levels):
            r = min(k, rows, cols)
            if rows < 2 or (rows + cols) * r * a.min_rate >= rows * cols:
                continue  # summed exactly at this level: no impact to measure
            jobs.append((i, j, k, f"l{i}-k{k}", common + [
                "--method", a.method, "--sqz", f"{a.level_param}={k}", "--only-layer", str(i)]))
    with ThreadPoolExecutor(a.jobs) as ex:
        results = list(ex.map(lambda jb: (jb, run(a.out, jb[3], jb[4])), jobs))
    rows_out = []
    for (i, j, k, name, _), r in results:
        rows, cols = probe["shapes"][i]
        err, nn = probe["err"][i][j], probe["norm"][i]
        rows_out.append({"layer": i, "shape": [rows, cols], "level": k,
                         "impact": r["eval_loss"] - dense["eval_loss"],
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
    print(f"dense eval_loss {dense['eval_loss']:.4f}")
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
        json.dump({"dense": {k: dense[k] for k in ("eval_loss", "eval_acc", "final_loss")},
                   "rows": rows_out, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()

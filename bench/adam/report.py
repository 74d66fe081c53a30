"""Loss curves (PNG) and a Markdown table from bench/adam/adam_sim.py's --out records.

    /usr/bin/python3 bench/adam/report.py DIR [--png-prefix PATH]

Reads DIR/*.json; writes DIR/table.md and one PNG per (model, workers) group, DIR/<model>-W<w>.png
(or PATH-<model>-W<w>.png), and prints the table.  In the table: final loss (mean of the last 5
steps) and its difference to dense AdamW of the same group; bytes per step over the whole run and
after the warm-up (the steps after freeze_step / var_freeze_step), as one rank sends them; the
factor against dense AdamW's bytes per step (runs with --no-precondition are rows of their own);
replicas: whether every worker ended with the same parameters ("-" for a 0/1 Adam run that ended
inside a local interval, where they legitimately differ).
"""
import glob
import json
import os
import sys
from collections import defaultdict

ORDER = ["adamw", "onebit", "zeroone", "onebit-noprec", "zeroone-noprec", "grad-sign",
         "grad-topk", "grad-quant"]
LABEL = {"adamw": "AdamW (dense)", "onebit": "1-bit Adam", "zeroone": "0/1 Adam",
         "onebit-noprec": "1-bit Adam, precondition=False",
         "zeroone-noprec": "0/1 Adam, precondition=False",
         "grad-sign": "AdamW, sign gradients + EF", "grad-topk": "AdamW, top-k 1% + EF21",
         "grad-quant": "AdamW, 4-bit gradients + EF"}


def smooth(xs, k):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def human(b):
    for unit in ("B", "KB", "MB", "GB"):
        if b < 1000 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000.0
    return ""


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    d = sys.argv[1]
    prefix = None
    if "--png-prefix" in sys.argv:
        prefix = sys.argv[sys.argv.index("--png-prefix") + 1]
    groups = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        if "losses" in r:
            opt = r["opt"]
            if opt in ("onebit", "zeroone") and r.get("args", {}).get("no_precondition"):
                opt += "-noprec"
            groups[(r["model"], r["workers"], r["params"], r["steps"])][opt] = r
    rows = ["| model | W | optimizer | final loss | vs AdamW | bytes/step (run) | "
            "bytes/step (after warm-up) | less than AdamW (run / after) | replicas | test acc |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for (model, w, params, steps), runs in sorted(groups.items()):
        base = runs.get("adamw")
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for opt in ORDER:
            r = runs.get(opt)
            if r is None:
                continue
            ax.plot(smooth(r["losses"], max(1, steps // 50)), label=LABEL[opt], lw=1.2)
            delta = ""
            ratio_run = ratio_after = ""
            if base is not None:
                delta = f"{100.0 * (r['final_loss'] / base['final_loss'] - 1.0):+.2f} %"
                ratio_run = base["bytes_per_step"] / max(1e-9, r["bytes_per_step"])
                ratio_after = base["bytes_per_step"] / max(1e-9, r["bytes_per_step_after_warmup"])
                ratio_run = f"{ratio_run:.1f}x / {ratio_after:.1f}x"
            ident = {True: "identical", False: "DIFFER", None: "-"}[r["replicas_identical"]]
            acc = f"{100 * r['test_accuracy']:.2f} %" if "test_accuracy" in r else ""
            rows.append(f"| {model} ({params / 1e6:.2f}M) | {w} | {LABEL[opt]} | "
                        f"{r['final_loss']:.4f} | {delta} | {human(r['bytes_per_step'])} | "
                        f"{human(r['bytes_per_step_after_warmup'])} | {ratio_run} | {ident} | "
                        f"{acc} |")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (moving average)")
        ax.set_title(f"{model}, {params / 1e6:.2f}M parameters, W = {w} simulated workers")
        lo = min(min(r["losses"][steps // 4:]) for r in runs.values())
        hi = max(r["losses"][steps // 4] for r in runs.values())
        ax.set_ylim(lo * 0.95, hi * 1.3)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        png = (f"{prefix}-{model}-W{w}.png" if prefix
               else os.path.join(d, f"{model}-W{w}.png"))
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        plt.close(fig)
    table = "\n".join(rows) + "\n"
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()

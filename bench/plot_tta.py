#!/usr/bin/python3
"""Plots and tabulates time-to-accuracy runs written by bench/tta.sh.

For each link rate: loss against wall time and against step (PNG), and a markdown table of the
wall time to reach the target test accuracy, the final accuracy and loss, and the speedup over
the dense run at the same rate.
"""
import argparse
import csv
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    steps, secs, loss, acc = [], [], [], []
    with open(path) as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            secs.append(float(row["seconds"]))
            loss.append(float(row["loss"]))
            acc.append(float(row["test_accuracy"]) if row["test_accuracy"] else None)
    return steps, secs, loss, acc


def time_to(target, secs, acc):
    for t, a in zip(secs, acc):
        if a is not None and a >= target:
            return t
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--out", default=".")
    ap.add_argument("csv", nargs="+")
    args = ap.parse_args()
    runs = {}
    for p in args.csv:
        m = re.match(r"tta-([^-]+)-([a-z0-9_]+)\.csv$", os.path.basename(p))
        if m:
            runs.setdefault(m.group(1), {})[m.group(2)] = load(p)
    order = ["dense", "topk", "quant", "sign"]
    lines = []
    for rate in sorted(runs):
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        dense_t = None
        if "dense" in runs[rate]:
            _, s, _, a = runs[rate]["dense"]
            dense_t = time_to(args.target, s, a)
        lines.append(f"\n**{rate}** (target test accuracy {args.target:.2f})\n")
        lines.append("| method | time to target (s) | speedup vs dense | final accuracy | final loss | total time (s) |")
        lines.append("|---|---|---|---|---|---|")
        for name in sorted(runs[rate], key=lambda n: order.index(n) if n in order else 99):
            st, s, lo, a = runs[rate][name]
            ax[0].plot(s, lo, label=name)
            ax[1].plot(st, lo, label=name)
            t = time_to(args.target, s, a)
            final_acc = [x for x in a if x is not None][-1]
            sp = f"{dense_t / t:.2f}x" if t and dense_t else "-"
            lines.append(f"| {name} | {t:.1f} | {sp} | {final_acc:.4f} | {lo[-1]:.4f} | {s[-1]:.1f} |"
                         if t else f"| {name} | not reached | - | {final_acc:.4f} | {lo[-1]:.4f} | {s[-1]:.1f} |")
        for a_, xl in zip(ax, ["wall time (s)", "step"]):
            a_.set_xlabel(xl)
            a_.set_ylabel("train loss")
            a_.set_yscale("log")
            a_.grid(alpha=0.3)
            a_.legend()
        fig.suptitle(f"sqz_bow_train, 4 emulated hosts at {rate}")
        fig.tight_layout()
        png = os.path.join(args.out, f"tta-{rate}.png")
        fig.savefig(png, dpi=90)
        plt.close(fig)
        lines.append(f"\n![loss at {rate}]({os.path.basename(png)})")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "tta.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

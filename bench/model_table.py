#!/usr/bin/env python3
"""Markdown tables of squeeze_bench --json records for the cost-model validation
(docs/performance.md, "The cost model against the emulated cluster").

    python3 bench/model_table.py results/h16.json [results/h8.json ...]

Per record, one row per method: dense and method milliseconds (median, slowest rank), speedup,
bytes sent per input byte, and - where the record has them - the ideal (sent bytes at the
SQZ_LINK_GBPS rate plus the compress and decode seconds measured in the same calls) and the cost
model's prediction (SQZ_EXCHANGE_MODEL=time) with measured / predicted."""
import json
import sys


def rows(path):
    with open(path) as f:
        rec = json.load(f)
    out = [f"`{path}`\n",
           "| method | dense ms | method ms | speedup | sent/in | ideal ms | method / ideal "
           "| model ms | method / model | dense model ms |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["allreduce"]:
        m = r["method"].replace(",LOG=info", "")
        ideal = r.get("ideal_s", 0.0)
        model = r.get("model_s", 0.0)
        cells = [f"`{m}`", f"{r['dense_s'] * 1e3:.0f}", f"{r['method_s'] * 1e3:.1f}",
                 f"{r['speedup']:.2f}x", f"{r['sent_ratio']:.4f}"]
        # The ideal needs a stated link rate (a measured one is the model's, not an ideal).
        if ideal > 0 and "LINK_GBPS=0," not in m + "," :
            cells += [f"{ideal * 1e3:.1f}", f"{r['method_s'] / ideal:.2f}"]
        else:
            cells += ["", ""]
        if model > 0:
            cells += [f"{model * 1e3:.1f}", f"{r['method_s'] / model:.2f}",
                      f"{r.get('dense_model_s', 0) * 1e3:.0f}"]
        else:
            cells += ["", "", ""]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main():
    for path in sys.argv[1:]:
        print("\n".join(rows(path)) + "\n")


if __name__ == "__main__":
    main()

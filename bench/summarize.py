#!/usr/bin/python3
"""Turns the results of bench/run_all.sh into the markdown tables of docs/performance.md.

Ideal time of a compressed all-reduce (the issue's yardstick): the bytes this rank sends over the
link rate, plus the bytes it must read and write over the memory bandwidth measured in the same
run.  Bytes touched per element: compress reads the input and the residual and writes the
residual (12 B), decode reads and writes the output (8 B): 20 B per float.  memcpy moves 2 bytes
(one read, one write) per byte copied, so the memory traffic rate is twice memcpy's copy rate.
"""
import json
import os
import re
import sys

RATES = {"1gbit": 1e9, "100mbit": 1e8, "10gbit": 1e10}


def kernels(out):
    p = os.path.join(out, "kernels.json")
    if not os.path.exists(p):
        return ""
    k = json.load(open(p))
    rows = [f"memcpy in this run: {k['memcpy_gbps']:.2f} GB/s (bytes copied per second), "
            f"{k['kernel_floats']} floats per call, one rank.\n",
            "| method | compress GB/s | decode GB/s | compress+decode GB/s | x memcpy | bits/element |",
            "|---|---|---|---|---|---|"]
    for r in k["kernels"]:
        rows.append(f"| `{r['method']}` | {r['compress_gbps']:.2f} | {r['decode_gbps']:.2f} | "
                    f"{r['combined_gbps']:.2f} | {r['fraction_of_memcpy']:.2f} | {r['bits_per_element']:.3f} |")
    return "\n".join(rows) + "\n"


def allreduce(out, name, rate):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return ""
    a = json.load(open(p))
    mem = a.get("memcpy_gbps")
    rows = []
    if mem:
        rows.append(f"memcpy measured in the same run on every rank at once: {mem:.2f} GB/s.\n")
    if mem:
        rows += ["| method | bytes | dense ms | method ms | speedup | sent/in | ideal ms | method / ideal | rel. error |",
                 "|---|---|---|---|---|---|---|---|---|"]
    else:
        rows += ["| method | bytes | dense ms | method ms | speedup | sent/in | rel. error |",
                 "|---|---|---|---|---|---|---|"]
    for r in a["allreduce"]:
        n = r["bytes"] / 4
        head = (f"| `{r['method']}` | {r['bytes']} | {1e3 * r['dense_s']:.2f} | {1e3 * r['method_s']:.2f} | "
                f"{r['speedup']:.2f}x | {r['sent_ratio']:.4f} |")
        if mem:
            ideal = r["sent_ratio"] * r["bytes"] * 8 / RATES[rate] + 20 * n / (2 * mem * 1e9)
            rows.append(f"{head} {1e3 * ideal:.1f} | {r['method_s'] / ideal:.2f} | {r['rel_error']:.3f} |")
        else:
            rows.append(f"{head} {r['rel_error']:.3f} |")
    return "\n".join(rows) + "\n"


def latency(out):
    p = os.path.join(out, "latency.txt")
    if not os.path.exists(p):
        return ""
    rows = ["| run | call | MPI_Allreduce (us) | PMPI_Allreduce (us) | overhead |", "|---|---|---|---|---|"]
    for line in open(p):
        m = re.match(r"(plain|preload) (\S+) MPI_Allreduce ([0-9.]+) us, PMPI_Allreduce ([0-9.]+) us, overhead (\S+)", line)
        if m:
            rows.append(f"| {'LD_PRELOAD' if m.group(1) == 'preload' else 'no preload'} | {m.group(2)} | "
                        f"{m.group(3)} | {m.group(4)} | {m.group(5)} |")
    return "\n".join(rows) + "\n"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
    print("## Kernels\n\n" + kernels(out))
    print("## 64 MiB all-reduce, 4 hosts at 1 Gbit/s\n\n" + allreduce(out, "ar-1gbit-64M.json", "1gbit"))
    print("## 16 MiB all-reduce, 4 hosts at 100 Mbit/s\n\n" + allreduce(out, "ar-100mbit-16M.json", "100mbit"))
    print("## Sizes 4 KiB to 256 MiB, 4 hosts at 1 Gbit/s\n\n" + allreduce(out, "ar-1gbit-sweep.json", "1gbit"))
    print("## Passthrough cost\n\n" + latency(out))
    tta = os.path.join(out, "tta.md")
    if os.path.exists(tta):
        print("## Time to accuracy\n\n" + open(tta).read())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Predicted gradient-communication time per step, 8 to 1024 GPUs: dense NCCL against Squeeze's
methods and exchanges (issue 17's cost model, written out).

Cluster: hosts of 8 GPUs joined by NVLink; between hosts one NIC per GPU (rail-optimized, the
DGX/HGX layout) at LINK Gbit/s.  A step all-reduces the model's bf16 gradients (2 bytes per
parameter) in DDP buckets of 25 MiB.

Per-GPU traffic of one all-reduce of S bytes on N = H hosts x L GPUs, payload P of the whole
buffer (P/S from the wire formats: quant b bits + 64 bits per 512-element bucket, sign 1 bit + 32
per 4096, top-k 64 bits per kept element):
  dense NCCL ring      NIC 2(N-1)/N * S / L   (one ring per rail: each NIC carries 1/L of it)
                       NVLink 2(N-1)/N * S    (concurrent with the NIC: max of the two)
  all-gather (flat)    NIC (N-L) * P          (every payload from every other host)
  scatter-reduce flat  NIC 2(N-L)/N * P
  hierarchical         NVLink 2(L-1)/L * S dense (reduce-scatter, then all-gather);
                       NIC: the shard's exchange among the H hosts:
                         scatter-reduce 2(H-1)/H * P / L, all-gather (H-1) * P / L
Kernels (compress, decode) at the rate measured for the GPU codecs (docs/performance.md: about
0.85 of a 2.8 TB/s device copy): compress reads the gradient and the fp32 residual and writes
both; decode reads the payloads it sums and writes the output.
Latency: 5 us per message round between hosts, 2 us inside; a collective among m ranks takes
ceil(log2 m) rounds (NCCL's trees; grouped sends), each compressed phase as many.

Two schedules: "sequential" adds every stage of a bucket; "pipelined" overlaps the buckets of a
step (DDP launches one bucket while the previous one is in flight), so a step takes the largest
of the stages' totals (NIC, NVLink, kernels) plus one bucket's sequential time.

  python3 bench/scale_model.py [--png docs/img/scale_model.png] [--json FILE]
"""
import argparse
import json
import math

GPUS_PER_HOST = 8
NVLINK_GBS = 360.0          # NCCL all-reduce bus bandwidth inside an H100 host, GB/s
KERNEL_GBS = 2400.0         # codec kernels, GB/s of bytes touched
LAT_INTER, LAT_INTRA = 5e-6, 2e-6
BUCKET = 25 << 20           # DDP's default bucket, bytes
ESZ = 2                     # bf16 gradients

METHODS = {                 # payload bytes per element (bf16 input), exchange family
    "quant 4 bits": (4 / 8 + 8 / 512, "sra"),
    "quant 8 bits": (8 / 8 + 8 / 512, "sra"),
    "sign": (1 / 8 + 4 / 4096, "sra"),
    "topk 1%": (0.01 * 8, "ag"),
}


def rounds(m):
    """Message rounds of a collective among m ranks, as NCCL's trees and grouped sends take them."""
    return math.ceil(math.log2(m)) if m > 1 else 0


def dense(S, N, L, link):
    nic_bytes = 2 * (N - 1) / N * S / L if N > L else 0.0
    nv = 2 * (N - 1) / N * S / NVLINK_GBS / 1e9 if N > 1 else 0
    lat = 2 * rounds(N) * (LAT_INTER if N > L else LAT_INTRA)
    return {"nic": nic_bytes / link, "nvlink": nv, "kernel": 0.0, "lat": lat, "overlap": True,
            "nic_bytes": nic_bytes}


def compressed(S, N, L, link, ratio, exchange, hier):
    """Stages of one bucket of S bytes (seconds) and the NIC bytes per GPU."""
    H = N // L
    n = S / ESZ
    P = n * ratio
    st = {"nic": 0.0, "nvlink": 0.0, "kernel": 0.0, "lat": 0.0, "overlap": False}
    if hier and H > 1:
        st["nvlink"] = 2 * (L - 1) / L * S / NVLINK_GBS / 1e9
        st["lat"] += 2 * rounds(L) * LAT_INTRA
        shard_p, m = P / L, H
        kn = n / L
    else:
        shard_p, m = P, N
        kn = n
    if exchange == "sra" and m > 2:
        nic = 2 * (m - 1) / m * shard_p
        phases = 2
        decode = 2 * shard_p + kn * ESZ + kn / m * 4
    else:
        nic = (m - 1) * shard_p
        phases = 1
        decode = (m - 1) * shard_p + kn * ESZ
    if not hier:
        # the part that leaves the host goes through the NIC, the rest through NVLink
        st["nvlink"] = nic * (L - 1) / max(N - 1, 1) / NVLINK_GBS / 1e9
        nic *= (N - L) / max(N - 1, 1)
    st["nic_bytes"] = nic
    st["nic"] = nic / link
    st["lat"] += phases * rounds(m) * (LAT_INTER if N > L else LAT_INTRA)
    compress = kn * (ESZ + 4 + 4) + shard_p
    st["kernel"] = (compress + decode) / KERNEL_GBS / 1e9
    return st


def step_time(stages, buckets, pipelined):
    seq = stages["lat"] + stages["kernel"] + (
        max(stages["nic"], stages["nvlink"]) if stages["overlap"]
        else stages["nic"] + stages["nvlink"])
    if not pipelined or buckets <= 1:
        return seq * buckets
    busiest = max(stages["nic"], stages["nvlink"], stages["kernel"])
    return busiest * buckets + (seq - busiest)


def predict(params, N, link_gbit, pipelined):
    link = link_gbit / 8 * 1e9
    S_total = params * ESZ
    buckets = max(1, math.ceil(S_total / BUCKET))
    S = S_total / buckets
    L = min(GPUS_PER_HOST, N)
    d = dense(S, N, L, link)
    rows = {"dense NCCL": (step_time(d, buckets, pipelined), d["nic_bytes"] * buckets)}
    for name, (ratio, family) in METHODS.items():
        options = {}
        for exchange in (["sra", "ag"] if family == "sra" else ["ag"]):
            for hier in (False, True):
                st = compressed(S, N, L, link, ratio, exchange, hier)
                label = ("hier " if hier else "") + ("scatter-reduce" if exchange == "sra"
                                                     else "all-gather")
                options[label] = (step_time(st, buckets, pipelined), st["nic_bytes"] * buckets)
        best = min(options, key=lambda k: options[k][0])
        t, b = options[best]
        if t >= rows["dense NCCL"][0]:
            best, (t, b) = "dense (switch)", rows["dense NCCL"]
        rows[name] = (t, b, best, options)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--png")
    ap.add_argument("--json")
    args = ap.parse_args()
    models = {"1B": 1.0e9, "7B": 7.0e9}
    sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
    out = []
    for sched in ("pipelined", "sequential"):
        for mname, params in models.items():
            for link in (100, 400):
                print(f"\n# {mname} parameters, bf16 gradients, {link} Gbit/s per GPU between "
                      f"hosts, {sched}: ms per step (speedup over dense; exchange chosen)")
                print(f"{'GPUs':>5} {'dense':>9} " + " ".join(f"{m:>36}" for m in METHODS))
                for N in sizes:
                    rows = predict(params, N, link, sched == "pipelined")
                    td = rows["dense NCCL"][0]
                    cells = []
                    for m in METHODS:
                        t, b, best, _ = rows[m]
                        cells.append(f"{t * 1e3:8.1f} ({td / t:4.1f}x, {best:<18})")
                    print(f"{N:>5} {td * 1e3:9.1f} " + " ".join(f"{c:>36}" for c in cells))
                    out.append({"model": mname, "link_gbit": link, "schedule": sched,
                                "gpus": N, "dense_ms": td * 1e3,
                                "dense_nic_bytes": rows["dense NCCL"][1],
                                "methods": {m: {"ms": rows[m][0] * 1e3,
                                                "nic_bytes": rows[m][1],
                                                "exchange": rows[m][2],
                                                "options_ms": {k: v[0] * 1e3
                                                               for k, v in rows[m][3].items()}}
                                            for m in METHODS}})
    goal = predict(1.0e9, 64, 100, True)
    q = goal["quant 4 bits"]
    opts = q[3]
    hier_b = opts["hier scatter-reduce"][1]
    print("\n# Goal check (64 GPUs = 8 hosts x 8, 100 Gbit/s, 1B bf16): quant 4 bits with "
          "hierarchy sends %.2fx fewer bytes between hosts than dense; predicted %.2fx faster "
          "(pipelined), %.2fx (sequential); exchange chosen: %s"
          % (goal["dense NCCL"][1] / hier_b, goal["dense NCCL"][0] / opts["hier scatter-reduce"][0],
             predict(1.0e9, 64, 100, False)["dense NCCL"][0]
             / predict(1.0e9, 64, 100, False)["quant 4 bits"][3]["hier scatter-reduce"][0], q[2]))
    losing = [(r["model"], r["link_gbit"], r["gpus"], m) for r in out for m, v in
              r["methods"].items() if "all-gather" in v["exchange"] and v["ms"] > r["dense_ms"]]
    print("# all-gather chosen where it loses to dense: %s" % (losing or "never"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, mname in zip(axes, models):
            for link, style in ((100, "-"), (400, "--")):
                rows = [r for r in out if r["model"] == mname and r["link_gbit"] == link
                        and r["schedule"] == "pipelined"]
                ax.plot(sizes, [r["dense_ms"] for r in rows], "k" + style,
                        label=f"dense NCCL, {link}G")
                for m, c in zip(METHODS, ("C0", "C1", "C2", "C3")):
                    ax.plot(sizes, [r["methods"][m]["ms"] for r in rows], style, color=c,
                            label=f"{m}, {link}G")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("GPUs (8 per host)")
            ax.set_title(f"{mname} parameters, bf16 gradients")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("predicted communication ms per step")
        axes[1].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print("wrote", args.png)


if __name__ == "__main__":
    main()

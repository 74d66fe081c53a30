#!/usr/bin/env python3
"""Which error feedback converges on the GPU path: tests/unit/test_defaults' heterogeneous
quadratic (the figures of docs/methods.md, "Which error feedback converges"), run through the
device engine with W ranks as threads on one GPU (squeeze.DeviceGroup).

f_r(x) = 1/2 sum_i a_ri (x_i - b_ri)^2, a_ri in [0.5, 2], b_ri = c_i + d_ri (the same
coefficients as the C test, from the same splitmix hash), 65536 coordinates, 4 ranks, plain
gradient descent x -= lr * avg_r grad f_r for 300 steps, the average all-reduced in place by the
library (SQZ_MIN_BYTES 0).  Prints the distance to the optimum relative to |x*| at the end.

  python3 bench/gpu/ef_quadratic_gpu.py [--steps 300] [--cases "topk:ef14,topk:ef21,..."]
"""
import argparse

import numpy as np
import torch

import squeeze

N, P = 65536, 4
M64 = (1 << 64) - 1


def mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    return z ^ (z >> np.uint64(31))


def unif(stream, lo, hi):
    with np.errstate(over="ignore"):
        s = np.uint64((stream * 0x9e3779b97f4a7c15 + 7) & M64)
        z = mix(mix(np.array([s], dtype=np.uint64))[0] + np.arange(N, dtype=np.uint64))
    return lo + (hi - lo) * (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def problem():
    a = [unif(100 + r, 0.5, 2.0) for r in range(P)]
    c = unif(1, -1.0, 1.0)
    b = [c + unif(200 + r, -1.0, 1.0) for r in range(P)]
    xs = sum(a[r] * b[r] for r in range(P)) / sum(a)
    return a, b, xs


def run(method, ef, lr, steps, a, b, xs, params):
    dev = "cuda"
    A = [torch.tensor(v, dtype=torch.float64, device=dev) for v in a]
    B = [torch.tensor(v, dtype=torch.float64, device=dev) for v in b]
    XS = torch.tensor(xs, dtype=torch.float64, device=dev)
    xs_norm = XS.norm().item()
    x = [torch.zeros(N, dtype=torch.float32, device=dev) for _ in range(P)]
    g = [torch.empty(N, dtype=torch.float32, device=dev) for _ in range(P)]
    dist = [None] * P
    kw = dict(params)
    if ef:
        kw["ef"] = ef
    with squeeze.DeviceGroup(P, method=method, min_bytes=0, **kw) as grp:
        streams = [torch.cuda.Stream() for _ in range(P)]

        def rank(r, comm):
            with torch.cuda.stream(streams[r]):
                for _ in range(steps):
                    g[r].copy_((A[r] * (x[r].double() - B[r])).float())
                    comm.allreduce_async(g[r].data_ptr(), N, "float32", op="avg", key=1,
                                         stream_ptr=streams[r].cuda_stream)
                    x[r].sub_(g[r], alpha=lr)
                streams[r].synchronize()
            dist[r] = ((x[r].double() - XS).norm() / xs_norm).item()

        grp.run(rank)
    same = all(torch.equal(x[0], x[r]) for r in range(1, P))
    return dist[0], same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lrs", default="0.1,0.3,0.9")
    ap.add_argument("--cases", default="none:,topk:ef14,topk:ef21,topk:none,quant:ef14,"
                                       "quant:ef21,sign:ef14,sign:ef21")
    args = ap.parse_args()
    a, b, xs = problem()
    params = {"topk": {"topk_density": 0.01}, "quant": {"quant_bits": 4}, "sign": {},
              "none": {}}
    lrs = [float(v) for v in args.lrs.split(",")]
    print(f"# heterogeneous quadratic, {P} ranks on one GPU, {N} coordinates, {args.steps} steps:"
          " distance to the optimum / |x*| at the end")
    print(f"{'method':<8} {'ef':<6} " + " ".join(f"{'lr ' + str(lr):>10}" for lr in lrs)
          + "  replicas")
    for case in args.cases.split(","):
        method, ef = case.split(":")
        cells, same_all = [], True
        for lr in lrs:
            d, same = run(method, ef, lr, args.steps, a, b, xs, params[method])
            cells.append(f"{d:10.3g}")
            same_all &= same
        print(f"{method:<8} {ef or '-':<6} " + " ".join(cells)
              + ("  identical" if same_all else "  DIFFER"))


if __name__ == "__main__":
    main()

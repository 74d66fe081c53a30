#!/usr/bin/python3
"""Times MPI_Allreduce of N floats (SUM, in place; or MPI_Reduce_scatter_block of N floats into
N / ranks with --op reduce_scatter) as the job calls it: through Squeeze's MPI
interposer when it is preloaded, so the hierarchy (SQZ_HIER) and everything else of the MPI path
run as in a training job; squeeze_bench drives the engine directly instead.

    bench/netcluster --hosts 2 --ranks-per-host 2 --rate 100mbit \\
        --env LD_PRELOAD=$PWD/.libs/libsqueeze_mpi.so --env SQZ_METHOD=quant \\
        -- /usr/bin/python3 bench/allreduce_time.py --label quant --bytes 16M --iters 3

Prints one JSON line on rank 0: the label, ranks, bytes, and the median and every call's seconds
(the slowest rank's, each call after one untimed warm-up call)."""
import argparse
import json
import sys
import time

import numpy as np
from mpi4py import MPI


def size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="")
    ap.add_argument("--bytes", type=size, default=16 << 20)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--op", choices=("allreduce", "reduce_scatter"), default="allreduce")
    a = ap.parse_args()
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(1234 + comm.rank)
    buf = np.empty(a.bytes // 4 // comm.size * comm.size, dtype=np.float32)
    out = np.empty(buf.size // comm.size, dtype=np.float32)
    times = []
    for it in range(a.iters + 1):
        buf[:] = rng.standard_normal(buf.size, dtype=np.float32)
        comm.Barrier()
        t0 = time.perf_counter()
        if a.op == "allreduce":
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:
            comm.Reduce_scatter_block(buf, out, op=MPI.SUM)
        dt = time.perf_counter() - t0
        slowest = comm.allreduce(dt, op=MPI.MAX)  # (a pickled double: never compressed)
        if it:
            times.append(slowest)
    if comm.rank == 0:
        print(json.dumps({"label": a.label, "op": a.op, "ranks": comm.size, "bytes": a.bytes,
                          "median_s": sorted(times)[len(times) // 2], "seconds": times}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()

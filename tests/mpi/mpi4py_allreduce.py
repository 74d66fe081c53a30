"""A Python job (mpi4py + numpy) under the Squeeze interposer.

mpi4py calls the C MPI_Allreduce of the MPI library it was built against, so LD_PRELOAD reaches
it like any C program.  Checks, each printed as PASS/FAIL by rank 0:
  * float32 Allreduce of 1M elements (in place and not): the result is bit-identical on every
    rank (hashes compared with comm.allgather, a pickle-based collective Squeeze never touches)
    and within --max-rel of the exact sum;
  * int64 Allreduce: exactly the sum (not a float SUM, so it passes through).
Exits 0 when every check passed on every rank, 1 otherwise.
"""
import argparse
import hashlib
import sys

import numpy as np
from mpi4py import MPI

N = 1 << 20


def rank_input(rank, tag, dtype):
    """Rank `rank`'s input for `tag`: every rank can rebuild every other rank's input."""
    rng = np.random.default_rng([12345, rank, tag])
    if dtype == np.int64:
        return rng.integers(-(10**12), 10**12, N, dtype=np.int64)
    return rng.uniform(-1.0, 1.0, N).astype(dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-rel", type=float, default=0.2,
                    help="bound on the relative L2 error of the float32 all-reduce")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    failures = 0

    def report(ok, name, detail):
        nonlocal failures
        all_ok = comm.allreduce(bool(ok), op=MPI.LAND)
        if not ok:
            print(f"rank {rank}: FAIL {name}: {detail}", file=sys.stderr, flush=True)
        if rank == 0:
            print(f"{'PASS' if all_ok else 'FAIL'} {name}: {detail}", flush=True)
        if not all_ok:
            failures += 1

    for tag, in_place in ((1, False), (2, True)):
        x = rank_input(rank, tag, np.float32)
        exact = np.zeros(N, dtype=np.float64)
        for r in range(size):
            exact += rank_input(r, tag, np.float32)
        if in_place:
            y = x
            comm.Allreduce(MPI.IN_PLACE, y, op=MPI.SUM)
        else:
            y = np.empty_like(x)
            comm.Allreduce(x, y, op=MPI.SUM)
        digest = hashlib.sha256(y.tobytes()).hexdigest()
        same = len(set(comm.allgather(digest))) == 1
        finite = bool(np.all(np.isfinite(y)))
        rel = float(np.linalg.norm(y.astype(np.float64) - exact) / np.linalg.norm(exact))
        name = f"float32 Allreduce {'in place' if in_place else 'out of place'} n={N}"
        report(same and finite and rel <= args.max_rel, name,
               f"{'bit-identical on all ranks' if same else 'ranks DIFFER'}, "
               f"rel_err {rel:.3e} (max {args.max_rel:g})")

    xi = rank_input(rank, 3, np.int64)
    expect = np.zeros(N, dtype=np.int64)
    for r in range(size):
        expect += rank_input(r, 3, np.int64)
    yi = np.empty_like(xi)
    comm.Allreduce(xi, yi, op=MPI.SUM)
    wrong = int(np.count_nonzero(yi != expect))
    report(wrong == 0, f"int64 Allreduce n={N}",
           "exact" if wrong == 0 else f"{wrong} elements differ from the exact sum")

    if rank == 0:
        print(f"mpi4py_allreduce: {'FAILED' if failures else 'all checks passed'} ({size} rank(s))",
              flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Python binding's hierarchical Comm (Context.mpi_comm(comm, hierarchical=True), over
sqz_comm_create_hier) under mpirun, hosts emulated with SQZ_HOST_ID (tests/mpi/test_hier.sh):
float32 SUM and AVG all-reduces of an odd count, in place and not, are bit-identical on every rank
and close to the exact result; each rank compresses its shard only (bytes_in); a reduce-scatter
gives each rank its block, compressed and close; hierarchical=False gives a flat Comm that
compresses the whole buffer.
Prints PASS/FAIL lines; exits 1 on any failure."""
import hashlib
import sys

import numpy as np
from mpi4py import MPI

import squeeze

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
failures = 0


def report(ok, what):
    global failures
    failures += 0 if ok else 1
    if rank == 0 or not ok:
        print(f"{'PASS' if ok else 'FAIL'} {what}", flush=True)


def run(hierarchical):
    ctx = squeeze.Context(env=True, method="quant", quant_bits=8)
    comm = ctx.mpi_comm(world, hierarchical=hierarchical)
    n, calls = 100003, 0
    for op in ("sum", "avg"):
        for in_place in (True, False):
            rng = np.random.default_rng(1000 * rank + calls)
            x = rng.integers(-64, 64, n).astype(np.float32)
            exact = world.allreduce(x.astype(np.float64), op=MPI.SUM)  # (float64: passes through)
            exact = exact / size if op == "avg" else exact
            out = x.copy() if in_place else np.zeros(n, np.float32)
            comm.allreduce(out.ctypes.data, n, "float32", op=op,
                           sendbuf=None if in_place else x.ctypes.data)
            calls += 1
            same = len(set(world.allgather(hashlib.sha1(out.tobytes()).hexdigest()))) == 1
            err = float(np.linalg.norm(out - exact) / np.linalg.norm(exact))
            report(same and err < 0.02,
                   f"hierarchical={hierarchical} {op} in_place={in_place}: "
                   f"{'bit-identical' if same else 'ranks DIFFER'}, rel_err {err:.3g}")
    stats = ctx.stats()
    shard = n // 2 + (1 if (rank % 2) < n % 2 else 0)  # (2 ranks per host in test_hier.sh)
    want = calls * 4 * (shard if hierarchical else n)
    report(stats["bytes_in"] == want, f"hierarchical={hierarchical}: rank {rank} bytes_in "
           f"{stats['bytes_in']} (expected {want})")
    if hierarchical:
        # The hierarchical reduce-scatter: block b goes to rank b (ranks host-major here: the
        # test's MPMD launch puts host a's ranks first), each rank's block close to the exact one.
        c = 20011
        rng = np.random.default_rng(7 + rank)
        x = rng.integers(-64, 64, c * size).astype(np.float32)
        exact = world.allreduce(x.astype(np.float64), op=MPI.SUM)[rank * c:(rank + 1) * c]
        out = np.zeros(c, np.float32)
        comm.reduce_scatter_block(out.ctypes.data, c, "float32", sendbuf=x.ctypes.data)
        err = float(np.linalg.norm(out - exact) / np.linalg.norm(exact))
        report(0 < err < 0.02, f"hierarchical reduce_scatter_block: rank {rank} rel_err {err:.3g}")
    ctx.close()


run(True)
run(False)
sys.exit(1 if world.allreduce(failures) else 0)

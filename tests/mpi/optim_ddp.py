"""squeeze.optim under DistributedDataParallel (gloo, CPU) with register_ddp_hook, one process per
MPI rank, the optimizer's Comm over mpi4py: the gradients DDP hands the optimizer are averaged
(the same on every rank) in the dense steps and each rank's own (different) in the others, and
every rank holds the same parameters after every synchronized step.  Prints PASS or FAIL lines;
exits 1 on a failure."""
import hashlib
import socket
import sys

from mpi4py import MPI
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import squeeze
import squeeze.optim as so

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
port = None
if rank == 0:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
port = world.bcast(port)
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=size)
torch.set_num_threads(1)
failures = 0


def digest(tensors):
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def same_everywhere(tensors):
    return len(set(world.allgather(digest(tensors)))) == 1


def run(cls, kw, steps):
    global failures
    torch.manual_seed(0)  # the same initial model on every rank
    model = DDP(torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(),
                                    torch.nn.Linear(32, 2)))
    ctx = squeeze.Context(env=False, method="sign")
    comm = ctx.mpi_comm(world)
    opt = cls(model.parameters(), comm, lr=1e-2, **kw)
    so.register_ddp_hook(model, opt)
    kinds = {"dense": 0, "local": 0}
    for step in range(steps):
        g = torch.Generator().manual_seed(100 * rank + step)
        x = torch.randn(16, 16, generator=g)
        dense = opt.dense_step_next()
        opt.zero_grad()
        ((model(x) - x[:, :2].sin()) ** 2).mean().backward()
        grads_same = same_everywhere([p.grad for p in model.parameters()])
        if grads_same != dense:
            failures += 1
            print(f"FAIL: {cls.__name__} step {step + 1}: gradients "
                  f"{'identical' if grads_same else 'different'} across ranks in a "
                  f"{'dense' if dense else 'compressed'} step", flush=True)
        kinds["dense" if dense else "local"] += 1
        opt.step()
        synced = not (cls is so.ZeroOneAdam and opt.sq["frozen"] and opt.sq["since_sync"] > 0)
        if synced and not same_everywhere(list(model.parameters())):
            failures += 1
            print(f"FAIL: {cls.__name__} step {step + 1}: the replicas differ", flush=True)
    if rank == 0:
        print(f"{cls.__name__}: {kinds['dense']} steps on averaged gradients, {kinds['local']} "
              f"on each rank's own, replicas identical after every synchronized step",
              flush=True)
    ctx.close()


run(so.OneBitAdam, dict(freeze_step=5), 15)
run(so.ZeroOneAdam, dict(var_freeze_step=12, var_update_scaler=2, local_step_scaler=3,
                         local_step_clipper=4), 24)
failures = world.allreduce(failures)
dist.destroy_process_group()
if rank == 0:
    print("PASS: squeeze.optim under DDP" if failures == 0 else f"FAIL: {failures} check(s)")
sys.exit(1 if failures else 0)

"""ddp_train.py's GPT language model trained with FSDP2 (fully_shard: one FSDP module per block,
plus the root), its gradient reduce-scatters dense or compressed by Squeeze through FSDP2's custom
reduce-scatter (squeeze.fsdp).  Needs PyTorch >= 2.6 (torch.distributed.fsdp.fully_shard).

GPU (NCCL; Squeeze on a dedicated NCCL communicator):
    torchrun --standalone --nproc_per_node=8 examples/pytorch/fsdp_train.py --comm dense
    PYTHONPATH=python SQUEEZE_LIB=$BUILD/.libs/libsqueeze.so torchrun --standalone \\
        --nproc_per_node=8 examples/pytorch/fsdp_train.py --comm squeeze \\
        --sqz method=quant --sqz quant_bits=4
CPU (gloo for FSDP's all-gathers; Squeeze on MPI_COMM_WORLD through mpi4py):
    PYTHONPATH=python SQUEEZE_LIB=$BUILD/.libs/libsqueeze.so mpirun -np 2 python3 \\
        examples/pytorch/fsdp_train.py --device cpu --comm squeeze --sqz method=quant \\
        --sqz quant_bits=4 --d-model 128 --layers 2 --vocab 1024 --seq 64 --batch 8

--comm dense: FSDP's own reduce-scatter (NCCL), or on the CPU MPI's (gloo has none in every
PyTorch version); --comm squeeze: squeeze.fsdp.register() on the model, settings from the SQZ_*
environment and --sqz NAME=VALUE.  On the CPU both use sum reductions (gloo has no AVG).
Rank 0 prints step, loss (mean over ranks) and step time, then one JSON line (final_loss: the
mean of the last 5 losses; sqz_stats: the Context's totals) which --json PATH also writes.
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_train import (MarkovChain, add_model_args, emit_result, make_model,  # noqa: E402
                       rank0_log, sqz_params)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comm", choices=("dense", "squeeze"), default="dense")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    add_model_args(ap, heads=4)
    ap.add_argument("--sqz", action="append", default=[], metavar="NAME=VALUE",
                    help="a Squeeze setting (repeatable), e.g. method=quant")
    ap.add_argument("--json", metavar="PATH")
    return ap.parse_args()


def launch(device):
    """(rank, world, torch device, mpi4py world or None): torchrun's variables, else mpirun's."""
    comm = None
    if "RANK" not in os.environ:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        os.environ.update(RANK=str(comm.Get_rank()), WORLD_SIZE=str(comm.Get_size()),
                          LOCAL_RANK=os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK",
                                                    str(comm.Get_rank())),
                          MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29517"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    return rank, world, dev, comm


def mpi_reduce_scatter(mpi):
    """A dense reduce-scatter over MPI for host tensors (FSDP's part on the CPU)."""
    def run(output_tensor, input_tensor, group, op, async_op=False):
        from mpi4py import MPI
        out = torch.empty_like(output_tensor, dtype=torch.float32)
        mpi.Reduce_scatter_block(input_tensor.float().numpy(), out.numpy(), op=MPI.SUM)
        if op == dist.ReduceOp.AVG:
            out /= group.size()
        output_tensor.copy_(out)
    return run


def main():
    args = parse_args()
    rank, world, device, mpi = launch(args.device)
    if args.device == "cpu" and mpi is None:
        raise SystemExit("--device cpu runs under mpirun (the host reduce-scatters go over MPI), "
                         "not torchrun")

    log = rank0_log(rank)
    from torch.distributed.fsdp import fully_shard
    model, n_params = make_model(args, device)
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh(args.device, (world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    fsdp_modules = [m for m in model.modules() if hasattr(m, "set_custom_reduce_scatter")]
    if args.device == "cpu":
        for m in fsdp_modules:
            m.set_force_sum_reduction_for_comms(True)  # (gloo has no AVG)
    dense_rs = mpi_reduce_scatter(mpi) if args.device == "cpu" else None
    ctx, comm, handle, hooks = None, None, None, {}
    if args.comm == "squeeze":
        import squeeze
        import squeeze.fsdp
        ctx = squeeze.Context(**sqz_params(args.sqz))
        if args.device == "cuda":
            import squeeze.ddp
            comm, handle = squeeze.ddp.create_nccl_comm(ctx)
            hooks = squeeze.fsdp.register(model, comm)
        else:
            comm = ctx.mpi_comm(mpi)
            hooks = squeeze.fsdp.register(model, comm, fallback=dense_rs)
        log(f"squeeze: method {ctx.method} on {len(hooks)} FSDP modules, library "
            f"{squeeze.library_path()}")
    elif dense_rs is not None:
        import squeeze.fsdp

        class Dense(squeeze.fsdp.SqueezeReduceScatter):
            def _why_not(self, *a):
                return "dense"

        for m in fsdp_modules:
            m.set_custom_reduce_scatter(Dense(None, 1, fallback=dense_rs))
    log(f"model: {n_params / 1e6:.1f}M parameters, {len(fsdp_modules)} FSDP modules, {world} "
        f"rank(s) on {args.device}, batch {args.batch}/rank, comm {args.comm}")

    chain = MarkovChain(args.vocab, args.chain_k, args.seed)
    data = chain.sample(args.steps * args.batch, args.seq + 1,
                        seed=args.seed * 1000 + 1 + rank).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    losses, times = [], []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        batch = data[step * args.batch:(step + 1) * args.batch]
        sync()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(batch[:, :-1]).float().reshape(-1, args.vocab),
                               batch[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        lt = loss.detach().float().reshape(1)
        dist.all_reduce(lt)
        losses.append(lt.item() / world)
        log(f"step {step:4d}  loss {losses[-1]:.4f}  time {times[-1]:8.1f} ms")

    timed = times[10:] if len(times) > 10 else times
    result = {"comm": args.comm, "device": args.device, "world_size": world, "params": n_params,
              "steps": args.steps, "first_loss": losses[0],
              "final_loss": sum(losses[-5:]) / len(losses[-5:]),
              "mean_step_ms": sum(timed) / len(timed)}
    if ctx is not None:
        result["sqz_method"] = ctx.method
        result["sqz_stats"] = ctx.stats()
        result["fsdp_calls"] = {k: (h.calls, h.squeezed, h.passed, dict(h.fallbacks))
                                for k, h in hooks.items()}
        if args.device == "cuda":
            torch.cuda.synchronize()
        comm.close()
        if handle:
            import squeeze.nccl
            squeeze.nccl.comm_destroy(handle)
        ctx.close()
    emit_result(result, rank, args.json)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

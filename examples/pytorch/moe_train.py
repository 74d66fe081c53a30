"""A small MoE transformer block trained data-parallel with one expert per rank, uncompressed
against LSH-MoE (squeeze.moe), printing the loss, the all-to-all bytes and time.

    mpirun -np 2 python3 examples/pytorch/moe_train.py --device cpu [--steps 60]
    mpirun -np 2 python3 examples/pytorch/moe_train.py --device cuda      # one GPU per rank

The block: embedding (vocabulary 32, d_model 32) -> causal self-attention -> top-1 gated MoE FFN
(expert r lives on rank r; tokens are grouped by expert and exchanged with
squeeze.moe.moe_layer: dispatch, expert, combine, with their backward passes) -> next-symbol
head.  The data are sequences of a noisy cyclic pattern.  Each run (codec "exact": the
uncompressed baseline through the same calls; then "lsh") starts from the same seed.  The shared
parameters' gradients are averaged with mpi4py all-reduces; the expert's stay on its rank.

Squeeze's MoE exchange works on host memory: on --device cuda the tokens and gradients are copied
to the host for each exchange and back (correct, not the fast path; the bytes and all-to-all
times printed are those of the host exchange).
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import squeeze  # noqa: E402
import squeeze.moe as sqmoe  # noqa: E402

V, D, H, S = 32, 32, 64, 16  # vocabulary, d_model, expert hidden, sequence length


class Block(torch.nn.Module):
    def __init__(self, P):
        super().__init__()
        self.emb = torch.nn.Embedding(V, D)
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.attn = torch.nn.MultiheadAttention(D, 4, batch_first=True)
        self.gate = torch.nn.Linear(D, P)
        self.head = torch.nn.Linear(D, V)


def batch(rng, B):
    start = rng.integers(0, V, (B, 1))
    seq = (start + np.arange(S + 1) * 3) % V
    flip = rng.random(seq.shape) < 0.1
    seq = np.where(flip, rng.integers(0, V, seq.shape), seq)
    return torch.from_numpy(seq[:, :-1]), torch.from_numpy(seq[:, 1:])


def run(codec, args, comm, ctx):
    world = comm.mpi
    rank, P = world.Get_rank(), world.Get_size()
    dev = torch.device(args.device)
    torch.manual_seed(0)  # shared parameters alike on every rank
    model = Block(P).to(dev)
    torch.manual_seed(1000 + rank)  # this rank's expert
    expert = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.GELU(),
                                 torch.nn.Linear(H, D)).to(dev)
    shared = list(model.parameters())
    opt = torch.optim.Adam(shared + list(expert.parameters()), lr=args.lr)
    rng = np.random.default_rng(7 + rank)
    mask = torch.triu(torch.ones(S, S, dtype=torch.bool, device=dev), 1)
    before = {c: ctx.moe_stats(c) for c in ("exact", "dedup", "lsh")}
    a2a, rate, losses = 0.0, [], []
    for _step in range(args.steps):
        inp, tgt = (t.to(dev) for t in batch(rng, args.batch))
        h = model.emb(inp)
        a = model.ln1(h)
        h = h + model.attn(a, a, a, attn_mask=mask, need_weights=False)[0]
        z = model.ln2(h).reshape(-1, D)
        prob = torch.softmax(model.gate(z), -1)
        p1, e1 = prob.max(-1)
        order = torch.argsort(e1, stable=True)
        counts = torch.bincount(e1, minlength=P).tolist()
        t0 = time.perf_counter()
        info = {}
        y = sqmoe.moe_layer(comm, z[order], counts, expert, codec, stats=info)
        a2a += time.perf_counter() - t0
        rate.append((info["centroids"], info["tokens"]))
        moe_out = torch.empty_like(y).index_copy(0, order, y) * p1.unsqueeze(-1)
        out = h + moe_out.reshape(h.shape)
        loss = torch.nn.functional.cross_entropy(model.head(out).reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad()
        t0 = time.perf_counter()
        loss.backward()  # the two backward all-to-alls (and the expert's backward) run here
        a2a += time.perf_counter() - t0
        flat = torch.cat([p.grad.reshape(-1) for p in shared]).cpu().numpy()
        world.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        off = 0
        for p in shared:
            n = p.numel()
            p.grad.copy_(torch.from_numpy(flat[off:off + n] / P).reshape(p.shape))
            off += n
        opt.step()
        losses.append(world.allreduce(float(loss), op=MPI.SUM) / P)
    after = {c: ctx.moe_stats(c) for c in ("exact", "dedup", "lsh")}
    wire = sum(after[c]["bytes_wire"] - before[c]["bytes_wire"] for c in after)
    tin = sum(after[c]["bytes_in"] - before[c]["bytes_in"] for c in after)
    wire, tin = world.allreduce(wire, op=MPI.SUM), world.allreduce(tin, op=MPI.SUM)
    a2a = world.allreduce(a2a, op=MPI.MAX)
    c, n = (world.allreduce(sum(v[i] for v in rate), op=MPI.SUM) for i in (0, 1))
    final = float(np.mean(losses[-10:]))
    if rank == 0:
        print(f"{codec:5s}: final loss {final:.4f} (mean of the last 10 steps), all-to-all "
              f"{wire / 1e6:.3f} MB on the wire of {tin / 1e6:.3f} MB of tokens (all ranks), "
              f"exchange + expert time {a2a:.3f} s (slowest rank, {args.steps} steps x 4 "
              f"exchanges), compression rate {c / max(n, 1):.4f}", flush=True)
    return final


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="sequences per rank and step")
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    world = MPI.COMM_WORLD
    if args.device == "cuda":
        torch.cuda.set_device(world.Get_rank() % torch.cuda.device_count())
    ctx = squeeze.Context()
    comm = ctx.mpi_comm(world)
    base = run("exact", args, comm, ctx)
    lsh = run("lsh", args, comm, ctx)
    if world.Get_rank() == 0:
        print(f"lsh / exact final loss: {lsh / base:.4f} ({100 * (lsh / base - 1):+.2f} %)")
    comm.close()
    ctx.close()


if __name__ == "__main__":
    main()

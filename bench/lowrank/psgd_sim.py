"""PowerSGD on the DDP example's transformer, with W workers simulated in one process (CPU or one
GPU): what a rank-r gradient all-reduce does to training, without a network or a second GPU.

    /usr/bin/python3 bench/lowrank/psgd_sim.py --comm dense
    /usr/bin/python3 bench/lowrank/psgd_sim.py --comm powersgd --rank 4 --ef ef21 --start 10
    python bench/lowrank/psgd_sim.py --device cuda --comm squeeze-gpu --rank 64   (the library's
        own GPU PowerSGD, --world ranks as threads on this GPU: squeeze.DeviceGroup)
    python bench/lowrank/psgd_sim.py --device cuda --vocab 32768 --d-model 768 --layers 12 \\
        --heads 12 --seq 256 --batch 32 --comm powersgd --rank 4 --iters 6     (the full model)

The model and the data are examples/pytorch/ddp_train.py's (GPT with tied embeddings, the same
Markov chain, one shard per worker drawn as that script draws rank r's, AdamW with its betas,
weight decay, learning-rate warm-up and gradient clipping).  Each step computes every worker's
gradient on its own shard and combines them as the Squeeze DDP hook's PowerSGD does (PyTorch's
algorithm: one matrix per parameter of two or more dimensions, rows = shape[0]; vectors and
matrices that a rank-r pair would not shrink by POWERSGD_MIN_RATE = 2 summed exactly; a shared
warm-started Q; P summed, orthonormalized, Q summed; mean = P Q^T / W):

  --ef ef14   error feedback as PyTorch's hook and SQZ_EF=ef14: each worker adds its residual
              before compressing and keeps M - P Q^T / W.
  --ef ef21   SQZ_EF=ef21: the dense start phase sets an estimator G to the exact mean; each step
              compresses gradient - G (its sum, which is all PowerSGD sends, is the same whether
              each worker keeps its own estimator or the shared one), adds the approximation to
              G and returns G.
  --ef none   no error feedback.
  --iters t   t power iterations per step (SQZ_POWERSGD_ITERS; Q orthonormalized between them).
              With t around 6 the warm-started iteration has converged to the best rank-r
              approximation of each step's matrix: no rank-r low-rank compressor can deliver
              more per step (an upper bound on what PowerSGD at that rank can reach).
  --emb-rank  the rank of the tied embedding (-1: --rank; 0: summed exactly).
  --start s   the first s steps are summed exactly (SQZ_POWERSGD_START_STEPS).

Prints the loss every 10 steps and a final line "RESULT {json}"; --out writes the whole record
(per-step losses, the fraction of dense floats sent per step, the arguments).  final_loss is the
mean of the last 5 steps' losses, as ddp_train.py reports it.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "examples", "pytorch"))
from ddp_train import GPT, MarkovChain  # noqa: E402  (the example's model and data)


def orthonormalize(P):
    """Gram-Schmidt on the columns of P (PyTorch's _orthogonalize_gram_schmidt, eps = 0)."""
    P = P.clone()
    for i in range(P.shape[1]):
        c = P[:, i:i + 1]
        c.div_(c.norm())
        if i + 1 < P.shape[1]:
            rest = P[:, i + 1:]
            rest.sub_(c @ (c.t() @ rest))
    return P


class DeviceGroupPowerSGD:
    """The mean of W workers' gradients through the library's own GPU PowerSGD: W ranks as
    threads on this GPU (squeeze.DeviceGroup, the device thread transport), each all-reducing
    (AVG) its gradients flattened into one buffer with the parameters' layout registered (as the
    DDP hook does), on its own stream.  Checks that every rank gets the same bits."""

    KEY = 0x5053  # the buffer's key

    def __init__(self, params, args, device):
        import squeeze
        from squeeze.ddp import param_layers
        self.n = sum(p.numel() for p in params)
        self.shapes = [p.shape for p in params]
        kw = {"method": "powersgd", "powersgd_rank": args.rank, "min_bytes": 0,
              "powersgd_start_steps": args.start, "ef": args.ef}
        if args.iters != 1:
            kw["powersgd_iters"] = args.iters
        self.group = squeeze.DeviceGroup(args.world, **kw)
        layers, _ = param_layers(self.shapes, list(range(1, len(params) + 1)))
        for comm in self.group.comms:
            comm.register_layout(self.KEY, self.n, layers)
        self.bufs = [torch.empty(self.n, device=device) for _ in range(args.world)]
        self.streams = [torch.cuda.Stream() for _ in range(args.world)]
        self.dense_floats, self.sent_floats, self.differ = self.n, 0, 0
        self._wire = 0

    def __call__(self, grads):
        for w, gs in enumerate(grads):
            torch.cat([g.reshape(-1) for g in gs], out=self.bufs[w])
        torch.cuda.synchronize()

        def rank(r, comm):
            comm.allreduce_async(self.bufs[r].data_ptr(), self.n, "float32", op="avg",
                                 key=self.KEY, stream_ptr=self.streams[r].cuda_stream)
            self.streams[r].synchronize()

        self.group.run(rank)
        self.differ += sum(not torch.equal(self.bufs[0], b) for b in self.bufs[1:])
        wire = self.group.contexts[0].stats()["bytes_wire"]
        self.sent_floats, self._wire = (wire - self._wire) / 4.0, wire
        out, off = [], 0
        for shape in self.shapes:
            k = math.prod(shape)
            out.append(self.bufs[0][off:off + k].view(shape).clone())
            off += k
        return out


class SimulatedPowerSGD:
    """The mean of W workers' gradients, per parameter, through rank-r PowerSGD."""

    MIN_RATE = 2.0

    def __init__(self, params, names, args, device):
        self.a = args
        self.gen = torch.Generator().manual_seed(0)
        self.ranks = []
        for p, name in zip(params, names):
            r = 0
            if p.dim() >= 2:
                rows, cols = p.shape[0], p.numel() // p.shape[0]
                r = args.rank
                if name == "tok.weight" and args.emb_rank >= 0:
                    r = args.emb_rank
                r = min(r, rows, cols)
                if (rows + cols) * r * self.MIN_RATE >= rows * cols:
                    r = 0
            self.ranks.append(r)
        self.state = [{} for _ in params]
        self.device = device
        self.step = 0
        self.dense_floats = sum(p.numel() for p in params)
        self.sent_floats = 0

    def __call__(self, grads):
        """grads[w][j]: worker w's gradient of parameter j.  Returns the combined mean per j."""
        a, W = self.a, len(grads)
        out, sent = [], 0
        compress = self.step >= a.start
        for j, r in enumerate(self.ranks):
            gs = [g[j] for g in grads]
            st = self.state[j]
            if r == 0 or not compress:
                mean = sum(gs) / W
                if r > 0 and a.ef == "ef21":
                    st["G"] = mean.reshape(mean.shape[0], -1).clone()
                out.append(mean)
                sent += gs[0].numel()
                continue
            shape = gs[0].shape
            Ms = [g.reshape(shape[0], -1) for g in gs]
            if a.ef == "ef21":
                G = st.setdefault("G", torch.zeros_like(Ms[0]))
                Ms = [M - G for M in Ms]
            elif a.ef == "ef14" and "e" in st:
                Ms = [M + e for M, e in zip(Ms, st["e"])]
            n, m = Ms[0].shape
            if "Q" not in st:
                st["Q"] = orthonormalize(torch.randn(m, r, generator=self.gen).to(self.device))
            Q = st["Q"]
            for it in range(a.iters):
                P = orthonormalize(sum(M @ Q for M in Ms))
                Q = sum(M.t() @ P for M in Ms) / W
                sent += (n + m) * r
                if it + 1 < a.iters:
                    Q = orthonormalize(Q)
            st["Q"] = Q
            approx = P @ Q.t()
            if a.ef == "ef14":
                st["e"] = [M - approx for M in Ms]
            if a.ef == "ef21":
                st["G"] = st["G"] + approx
                out.append(st["G"].clone().view(shape))
            else:
                out.append(approx.view(shape))
        self.step += 1
        self.sent_floats = sent
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comm", choices=("dense", "powersgd", "squeeze-gpu"), default="dense",
                    help="squeeze-gpu: the library's GPU PowerSGD on --world ranks of this GPU")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--start", type=int, default=2)
    ap.add_argument("--ef", choices=("ef14", "ef21", "none"), default="ef14")
    ap.add_argument("--emb-rank", type=int, default=-1)
    ap.add_argument("--world", type=int, default=2, help="simulated workers")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="sequences per worker per step")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--chain-k", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--name", default="run")
    ap.add_argument("--out", help="write the whole record as JSON here")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    torch.manual_seed(a.seed)
    model = GPT(a.vocab, a.seq, a.d_model, a.layers, a.heads, a.mlp_ratio).to(dev)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    chain = MarkovChain(a.vocab, a.chain_k, a.seed)
    data = [chain.sample(a.steps * a.batch, a.seq + 1, seed=a.seed * 1000 + 1 + w).to(dev)
            for w in range(a.world)]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    psgd = (SimulatedPowerSGD(params, names, a, dev) if a.comm == "powersgd"
            else DeviceGroupPowerSGD(params, a, dev) if a.comm == "squeeze-gpu" else None)

    losses, sent = [], []
    t0 = time.time()
    for step in range(a.steps):
        lr = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
        for group in opt.param_groups:
            group["lr"] = lr
        grads, step_losses = [], []
        for w in range(a.world):
            batch = data[w][step * a.batch:(step + 1) * a.batch]
            x, y = batch[:, :-1], batch[:, 1:]
            loss = F.cross_entropy(model(x).float().view(-1, a.vocab), y.reshape(-1))
            grads.append([g.detach() for g in torch.autograd.grad(loss, params)])
            step_losses.append(loss.item())
        if psgd is None:
            mean = [sum(gs) / a.world for gs in zip(*grads)]
            sent.append(1.0)
        else:
            mean = psgd(grads)
            sent.append(psgd.sent_floats / psgd.dense_floats)
        for p, g in zip(params, mean):
            p.grad = g
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(sum(step_losses) / a.world)
        if step % 10 == 0 or step == a.steps - 1:
            print(f"{a.name} step {step:3d} loss {losses[-1]:.4f} sent {sent[-1]:.4f} "
                  f"t {time.time() - t0:.0f}s", flush=True)
    res = {"name": a.name, "final_loss": sum(losses[-5:]) / len(losses[-5:]),
           "replicas_differ": getattr(psgd, "differ", 0),
           "sent_fraction": sum(sent[a.start:]) / max(1, len(sent[a.start:])),
           "entropy_rate": chain.cond_entropy, "uniform_loss": math.log(a.vocab)}
    print("RESULT", json.dumps(res), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(res, losses=losses, sent=sent, args=vars(a)), f)


if __name__ == "__main__":
    main()

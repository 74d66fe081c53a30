"""Layer-adaptive compression measured through the library itself: W workers simulated in one
process (CPU), their gradients averaged by Squeeze's own compressed all-reduce
(squeeze.LocalGroup: sqz_allreduce over an in-process transport, host memory), so the quality
and byte figures are the library's, probes included.

    /usr/bin/python3 bench/lowrank/lgreco_sim.py --model resnet --method powersgd \\
        --sqz POWERSGD_RANK=4 [--sqz ADAPT=lgreco --sqz ADAPT_PERIOD=20] --out DIR/NAME.json
    /usr/bin/python3 bench/lowrank/lgreco_sim.py --model gpt --method dense

Models:
  resnet  a small ResNet (3 stages of one residual block, 16/32/64 channels, GroupNorm; 78K
          parameters) on synthetic 10-class 32 x 32 images: a smooth random template per class,
          shifted by up to 4 pixels, scaled and drowned in noise (L-GreCo's benchmark family,
          CIFAR ResNets, without a dataset download).  Its layers differ: 3 x 27 up to 64 x 576.
  gpt     examples/pytorch/ddp_train.py's transformer and Markov-chain data at a small size.
Every parameter is one layer of the registered layout (rows = shape[0], cols = the rest, as
PyTorch's PowerSGD hook reshapes them), in one flat float32 buffer per worker.  SGD with
momentum (resnet) or AdamW (gpt), the same seeds for every run: runs differ only in the exchange.

Prints the loss every 20 steps and "RESULT {json}": final_loss (mean of the last 10 steps'
training losses), eval_loss and eval_acc (a fixed held-out set: 2048 images, or 256 sequences),
bytes_per_step (this rank's wire bytes over the run, probing calls included, divided by the
steps), dense_bytes_per_step, and under SQZ_ADAPT the last choice ("levels").
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "examples", "pytorch"))

import squeeze  # noqa: E402


# -------------------------------------------------------------------------------------------------
# Models and data
# -------------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(8, cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        y = F.relu(self.n1(self.c1(x)))
        y = self.n2(self.c2(y))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


class ResNet(nn.Module):
    def __init__(self, classes=10, width=16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.n0 = nn.GroupNorm(8, width)
        self.stages = nn.Sequential(Block(width, width, 1), Block(width, 2 * width, 2),
                                    Block(2 * width, 4 * width, 2))
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = F.relu(self.n0(self.stem(x)))
        x = self.stages(x)
        return self.fc(x.mean(dim=(2, 3)))


class ImageTask:
    """10 classes of 32 x 32 x 3 images: template[y] (smooth random), shifted by up to 4 pixels,
    scaled by U(0.5, 1.5), plus N(0, noise^2) per pixel.  Worker w's batches come from its own
    generator."""

    def __init__(self, seed, classes=10, noise=1.0):
        g = torch.Generator().manual_seed(seed)
        t = torch.randn(classes, 3, 8, 8, generator=g)
        self.templates = F.interpolate(t, size=32, mode="bilinear", align_corners=False)
        self.classes, self.noise = classes, noise

    def batch(self, gen, n):
        y = torch.randint(0, self.classes, (n,), generator=gen)
        x = self.templates[y]
        dx, dy = torch.randint(-4, 5, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
        scale = 0.5 + torch.rand(n, 1, 1, 1, generator=gen)
        x = x * scale + self.noise * torch.randn(x.shape, generator=gen)
        return x, y


class TeacherTask:
    """Labels from a fixed random teacher (the student's architecture, another seed) on smooth
    Gaussian images (8 x 8 noise upsampled to 32 x 32, plus fine noise): learnable exactly by the
    student, with no plateau to escape, so that runs differ by their exchange more than by their
    luck.  The teacher's logits are centred on a sample so that the classes are balanced."""

    def __init__(self, seed, classes=10):
        torch.manual_seed(seed + 777)
        self.teacher = ResNet(classes)
        self.gen_center = torch.Generator().manual_seed(seed + 778)
        with torch.no_grad():
            self.center = self.teacher(self._images(self.gen_center, 2048)).mean(0)

    @staticmethod
    def _images(gen, n):
        x = torch.randn(n, 3, 8, 8, generator=gen)
        x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
        return x + 0.3 * torch.randn(n, 3, 32, 32, generator=gen)

    @torch.no_grad()
    def batch(self, gen, n):
        x = self._images(gen, n)
        return x, (self.teacher(x) - self.center).argmax(1)


def make_task(a):
    """(model, loss_fn(worker, step) -> loss, optimizer, evaluate() -> (loss, accuracy) on a
    fixed held-out set)."""
    torch.manual_seed(a.seed)
    if a.model == "resnet":
        task = TeacherTask(a.seed) if a.task == "teacher" else ImageTask(a.seed, noise=a.noise)
        torch.manual_seed(a.seed)
        model = ResNet()
        def loss_fn(w, step):
            # Worker w's batch of a step depends on (seed, w, step) alone: a run resumed at any
            # step sees the batches an uninterrupted one does.
            gen = torch.Generator().manual_seed((a.seed * 1000003 + w) * 1000003 + step)
            x, y = task.batch(gen, a.batch)
            return F.cross_entropy(model(x), y)

        opt = (torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
               if a.opt == "sgd" else torch.optim.AdamW(model.parameters(), lr=a.lr))
        held = [task.batch(torch.Generator().manual_seed(a.seed * 7 + i), 256) for i in range(8)]

        @torch.no_grad()
        def evaluate():
            loss = acc = 0.0
            for x, y in held:
                out = model(x)
                loss += F.cross_entropy(out, y).item() / len(held)
                acc += (out.argmax(1) == y).float().mean().item() / len(held)
            return loss, acc

        return model, loss_fn, opt, evaluate
    from ddp_train import GPT, MarkovChain
    model = GPT(a.vocab, a.seq, a.d_model, a.layers, a.heads, 4)
    chain = MarkovChain(a.vocab, 4, a.seed)
    held = chain.sample(256, a.seq + 1, seed=a.seed * 7 + 999)

    @torch.no_grad()
    def evaluate():
        out = model(held[:, :-1]).float()
        y = held[:, 1:]
        return (F.cross_entropy(out.reshape(-1, a.vocab), y.reshape(-1)).item(),
                (out.argmax(-1) == y).float().mean().item())

    def loss_fn(w, step):
        b = chain.sample(a.batch, a.seq + 1, seed=(a.seed * 1000003 + w) * 1000003 + step)
        return F.cross_entropy(model(b[:, :-1]).float().reshape(-1, a.vocab), b[:, 1:].reshape(-1))

    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    return model, loss_fn, opt, evaluate


def layout(params):
    """One layer per parameter: (offset, rows, cols, id)."""
    out, off = [], 0
    for i, p in enumerate(params):
        rows = p.shape[0] if p.dim() >= 2 else 1
        out.append((off, rows, p.numel() // rows, i + 1))
        off += p.numel()
    return out, off


def probe(flats, layers, ranks, stats):
    """Adds each layer's statistics of this step: sum over workers of ||g||^2 and of the best
    rank-k approximation's squared error (||g||^2 minus the k largest squared singular values),
    the quantity PowerSGD's probes estimate."""
    stats["probes"] += 1
    for i, (off, rows, cols, _) in enumerate(layers):
        for f in flats:
            g = f[off:off + rows * cols].view(rows, cols).double()
            nn_ = float((g * g).sum())
            stats["norm"][i] += nn_
            sv2 = torch.linalg.svdvals(g) ** 2 if rows > 1 else torch.tensor([nn_])
            for j, k in enumerate(ranks):
                stats["err"][i][j] += max(0.0, nn_ - float(sv2[:k].sum()))


# -------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("resnet", "gpt"), default="resnet")
    ap.add_argument("--method", default="dense",
                    help="dense (the exact mean, no library), or a Squeeze method")
    ap.add_argument("--sqz", action="append", default=[], metavar="NAME=VALUE",
                    help="a Squeeze setting (SQZ_ name without the prefix), repeatable")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32, help="examples per worker per step")
    ap.add_argument("--lr", type=float, default=None, help="default 0.05 (resnet), 1e-3 (gpt)")
    ap.add_argument("--warmup", type=int, default=10, help="linear learning-rate warm-up steps")
    ap.add_argument("--task", choices=("teacher", "templates"), default="teacher",
                    help="resnet: labels from a random teacher network, or noisy class templates")
    ap.add_argument("--opt", choices=("sgd", "adamw"), default="sgd", help="resnet's optimizer")
    ap.add_argument("--noise", type=float, default=2.0, help="resnet templates: pixel noise")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--only-layer", type=int, default=-1,
                    help="register only this parameter's layer (the rest is summed exactly): "
                    "what compressing one layer costs")
    ap.add_argument("--probe-every", type=int, default=0,
                    help="every K steps record each layer's statistics at --probe-ranks from the "
                    "workers' gradients (best rank-k error by SVD, summed over workers)")
    ap.add_argument("--probe-ranks", default="1,2,4,8")
    ap.add_argument("--save-at", default="",
                    help="comma-separated steps: save the model and optimizer there to "
                    "--checkpoint (where {step} becomes the step)")
    ap.add_argument("--resume", action="store_true",
                    help="start from --checkpoint (its step count): the run's steps follow it")
    ap.add_argument("--checkpoint", help="the file of --save-at and --resume")
    ap.add_argument("--name", default="run")
    ap.add_argument("--out", help="write the whole record (per-step losses) as JSON here")
    a = ap.parse_args()
    if a.lr is None:
        a.lr = 0.05 if a.model == "resnet" else 1e-3
    torch.set_num_threads(a.threads)
    model, loss_fn, opt, evaluate = make_task(a)
    params = list(model.parameters())
    layers, n = layout(params)
    flats = [torch.zeros(n, dtype=torch.float32) for _ in range(a.workers)]
    group = None
    if a.method != "dense":
        kv = {"method": a.method, "min_bytes": "0"}
        for s in a.sqz:
            k, v = s.split("=", 1)
            kv[k.lower()] = v
        group = squeeze.LocalGroup(a.workers, **kv)
        reg = [layers[a.only_layer]] if a.only_layer >= 0 else layers
        for c in group.comms:
            c.register_layout(1, n, reg)
    probe_ranks = [int(r) for r in a.probe_ranks.split(",")]
    stats = {"err": [[0.0] * len(probe_ranks) for _ in layers], "norm": [0.0] * len(layers),
             "probes": 0}

    def exchange(rank, comm):
        comm.allreduce(flats[rank].data_ptr(), n, "float32", "avg", key=1)

    first = 0
    if a.resume:
        ck = torch.load(a.checkpoint)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        first = ck["step"]
    losses, t0 = [], time.time()
    for step in range(first, first + a.steps):
        if a.checkpoint and str(step) in a.save_at.split(","):
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},
                       a.checkpoint.format(step=step))
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
        step_loss = 0.0
        for w in range(a.workers):
            loss = loss_fn(w, step)
            grads = torch.autograd.grad(loss, params)
            torch.cat([g.reshape(-1) for g in grads], out=flats[w])
            step_loss += loss.item() / a.workers
        if a.probe_every > 0 and step % a.probe_every == 0:
            probe(flats, layers, probe_ranks, stats)
        if group is None:
            mean = sum(flats) / a.workers
        else:
            group.run(exchange)
            mean = flats[0]
        off = 0
        for p in params:
            p.grad = mean[off:off + p.numel()].view_as(p).clone()
            off += p.numel()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        if step % 20 == 0 or step == first + a.steps - 1:
            print(f"{a.name} step {step:4d} loss {step_loss:.4f} t {time.time() - t0:.0f}s",
                  flush=True)
    eval_loss, eval_acc = evaluate()
    res = {"name": a.name, "model": a.model, "method": a.method, "sqz": a.sqz,
           "workers": a.workers, "steps": a.steps, "params": n,
           "final_loss": sum(losses[-10:]) / len(losses[-10:]), "eval_loss": eval_loss,
           "eval_acc": eval_acc,
           "dense_bytes_per_step": 4.0 * n, "bytes_per_step": 4.0 * n,
           "replicas_identical": True, "seconds": time.time() - t0}
    if group is not None:
        st = group.contexts[0].stats_json()
        res["bytes_per_step"] = st["bytes_wire"] / a.steps
        res["replicas_identical"] = all(torch.equal(flats[0], f) for f in flats[1:])
        res["calls_fallback"] = st.get("calls_fallback", 0)
        adapt = st.get("adapt") or []
        if adapt:
            res["levels"] = adapt[-1].get("levels")
            res["adapt"] = adapt[-1]
        group.close()
    res["ratio"] = res["dense_bytes_per_step"] / max(1.0, res["bytes_per_step"])
    if stats["probes"]:
        res["probe"] = dict(stats, ranks=probe_ranks, shapes=[l[1:3] for l in layers])
    print("RESULT", json.dumps({k: v for k, v in res.items() if k != "adapt"}), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(res, losses=losses, args=vars(a)), f)


if __name__ == "__main__":
    main()

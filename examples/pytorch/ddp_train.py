"""A GPT-style language model (about 110M parameters) trained with DistributedDataParallel, with the
gradient all-reduce dense, compressed by Squeeze, or compressed by PyTorch's own hooks.

    torchrun --standalone --nproc_per_node=2 examples/pytorch/ddp_train.py --comm dense
    LD_PRELOAD=$BUILD/.libs/libsqueeze_nccl.so SQZ_METHOD=quant \\
        torchrun --standalone --nproc_per_node=2 examples/pytorch/ddp_train.py --comm dense
    PYTHONPATH=python SQUEEZE_LIB=$BUILD/.libs/libsqueeze.so \\
        torchrun --standalone --nproc_per_node=2 examples/pytorch/ddp_train.py --comm squeeze \\
        --sqz method=quant --sqz quant_bits=4
    torchrun ... examples/pytorch/ddp_train.py --comm torch-fp16
    torchrun ... examples/pytorch/ddp_train.py --comm torch-powersgd --powersgd-rank 4

--comm:
  dense           plain DDP (NCCL all-reduce per bucket).  Under LD_PRELOAD=libsqueeze_nccl.so
                  this is the job Squeeze compresses transparently.
  squeeze         DDP with squeeze.ddp's communication hook (Python binding, no preload); the
                  settings come from the SQZ_* environment and --sqz NAME=VALUE.
  torch-fp16      torch's fp16_compress_hook.
  torch-powersgd  torch's PowerSGD hook (rank --powersgd-rank, start_powerSGD_iter
                  --powersgd-start, default 2).

The data is synthetic and learnable: token sequences of a fixed random sparse Markov chain (each
token has a few successors, drawn from a Zipf distribution), the same chain on every rank, each
rank sampling its own shard.  Rank 0 prints step, loss (mean over ranks), step time (the GPU
synchronized before and after each step) and, at the end, one JSON line:
  {"comm": ..., "mean_step_ms": (mean over the steps after the first 10),
   "final_loss": (mean of the last 5 losses), "params": ..., ...}
which --json PATH also writes.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


# -------------------------------------------------------------------------------------------------
# Model
# -------------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d_model, n_heads, mlp_ratio):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.mlp_out = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        h = self.n_heads
        q = q.view(B, T, h, C // h).transpose(1, 2)
        k = k.view(B, T, h, C // h).transpose(1, 2)
        v = v.view(B, T, h, C // h).transpose(1, 2)
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0 (bench/lowrank/psgd_sim.py on Debian's torch): the same, written out
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // h)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_out(y)
        x = x + self.mlp_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    """Decoder-only transformer, pre-LayerNorm, learned positions, tied input/output embeddings."""

    def __init__(self, vocab, seq, d_model, n_layers, n_heads, mlp_ratio):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("attn_out.weight") or name.endswith("mlp_out.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


# -------------------------------------------------------------------------------------------------
# Data: a sparse random Markov chain
# -------------------------------------------------------------------------------------------------
class MarkovChain:
    """Each token has `k` successors, drawn once from a Zipf(1.1) popularity over the vocabulary,
    with random transition probabilities.  The chain depends only on `seed`."""

    def __init__(self, vocab, k, seed):
        g = torch.Generator().manual_seed(seed)
        zipf = torch.arange(1, vocab + 1, dtype=torch.float64).pow(-1.1)
        pop = torch.empty(vocab, dtype=torch.float64)
        pop[torch.randperm(vocab, generator=g)] = zipf / zipf.sum()
        self.pop = pop
        self.succ = torch.multinomial(pop, vocab * k, replacement=True, generator=g).view(vocab, k)
        w = torch.rand(vocab, k, generator=g, dtype=torch.float64).pow(3) + 1e-3
        self.cum = (w / w.sum(1, keepdim=True)).cumsum(1)
        self.k = k
        # Entropy rate under the popularity start distribution (a lower bound guide for the loss).
        p = w / w.sum(1, keepdim=True)
        self.cond_entropy = float(-(pop[:, None] * p * p.log()).sum())

    def sample(self, n_seq, length, seed):
        g = torch.Generator().manual_seed(seed)
        out = torch.empty(n_seq, length, dtype=torch.long)
        tok = torch.multinomial(self.pop, n_seq, replacement=True, generator=g)
        out[:, 0] = tok
        for t in range(1, length):
            u = torch.rand(n_seq, generator=g, dtype=torch.float64)
            j = (u[:, None] > self.cum[tok]).sum(1).clamp_(max=self.k - 1)
            tok = self.succ[tok, j]
            out[:, t] = tok
        return out


# -------------------------------------------------------------------------------------------------
def rank0_log(rank):
    """print, on rank 0 only, flushed."""
    def log(*a):
        if rank == 0:
            print(*a, flush=True)
    return log


def make_model(args, device):
    """(the GPT of add_model_args' options on device, seeded with --seed: the same weights on
    every rank; its parameter count)."""
    torch.manual_seed(args.seed)
    model = GPT(args.vocab, args.seq, args.d_model, args.layers, args.heads,
                args.mlp_ratio).to(device)
    return model, sum(p.numel() for p in model.parameters())


def sqz_params(pairs):
    """{name: value} of the --sqz NAME=VALUE options (fsdp_train.py uses it too)."""
    params = {}
    for kv in pairs:
        name, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--sqz expects NAME=VALUE, not {kv!r}")
        params[name.strip()] = value.strip()
    return params


def emit_result(result, rank, path):
    """Rank 0 prints the final JSON line, and writes it to path too when given."""
    if rank == 0:
        line = json.dumps(result, sort_keys=True)
        print(line, flush=True)
        if path:
            with open(path, "w") as f:
                f.write(line + "\n")


def add_model_args(ap, heads=12):
    """The model, data and schedule options that fsdp_train.py shares with this script."""
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="sequences per GPU per step")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=heads)
    ap.add_argument("--mlp-ratio", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=10, help="linear learning-rate warm-up steps")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--chain-k", type=int, default=4, help="successors per token in the chain")


def parse_args():
    ap = argparse.ArgumentParser(description="GPT-style LM under DDP, dense or compressed "
                                             "gradient all-reduce")
    ap.add_argument("--comm", choices=("dense", "squeeze", "torch-fp16", "torch-powersgd"),
                    default="dense")
    add_model_args(ap)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    ap.add_argument("--bucket-cap-mb", type=float, default=25, help="DDP bucket size (MB)")
    ap.add_argument("--powersgd-rank", type=int, default=4)
    ap.add_argument("--powersgd-start", type=int, default=2,
                    help="torch-powersgd: start_powerSGD_iter (dense steps first)")
    ap.add_argument("--sqz", action="append", default=[], metavar="NAME=VALUE",
                    help="a Squeeze parameter for --comm squeeze (method=quant, quant_bits=4); "
                         "SQZ_* environment variables are read too, these win")
    ap.add_argument("--sqz-stats", metavar="PATH",
                    help="--comm squeeze: write each rank's Squeeze stats JSON (%%r: the rank)")
    ap.add_argument("--json", metavar="PATH", help="also write the final JSON line here")
    return ap.parse_args()


def main():
    args = parse_args()
    # Also runs without torchrun, as a job of one process.
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                 ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29512")):
        os.environ.setdefault(k, v)
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    log = rank0_log(rank)
    # Same initial weights on every rank (DDP broadcasts rank 0's anyway).
    model, n_params = make_model(args, device)
    log(f"model: {n_params / 1e6:.1f}M parameters (vocab {args.vocab}, d_model {args.d_model}, "
        f"{args.layers} layers, {args.heads} heads, MLP x{args.mlp_ratio}, seq {args.seq}, tied "
        f"embeddings); {world} rank(s), batch {args.batch}/GPU, comm {args.comm}"
        + (", bf16 autocast" if args.bf16 else ""))

    # Data: the same chain everywhere, a different shard per rank.
    chain = MarkovChain(args.vocab, args.chain_k, args.seed)
    data = chain.sample(args.steps * args.batch, args.seq + 1,
                        seed=args.seed * 1000 + 1 + rank).to(device)
    log(f"data: Markov chain with {args.chain_k} successors per token, entropy rate about "
        f"{chain.cond_entropy:.3f} nats/token (uniform: {math.log(args.vocab):.3f})")

    ddp = DDP(model, device_ids=[local_rank], bucket_cap_mb=args.bucket_cap_mb)
    sqz_state = None
    if args.comm == "squeeze":
        import squeeze.ddp
        sqz_state = squeeze.ddp.register(ddp, **sqz_params(args.sqz))
        log(f"squeeze: method {sqz_state.ctx.method}, library {squeeze.library_path()}")
    elif args.comm == "torch-fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif args.comm == "torch-powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
        state = powerSGD_hook.PowerSGDState(process_group=None,
                                            matrix_approximation_rank=args.powersgd_rank,
                                            start_powerSGD_iter=args.powersgd_start)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)

    losses, times = [], []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = data[step * args.batch:(step + 1) * args.batch]
        x, y = batch[:, :-1], batch[:, 1:]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.bf16):
            logits = ddp(x)
        loss = F.cross_entropy(logits.float().view(-1, args.vocab), y.reshape(-1))
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        # Outside the timed region: the mean loss over ranks (a one-element all-reduce, which
        # Squeeze passes through untouched).
        lt = loss.detach().float().reshape(1)
        dist.all_reduce(lt, op=dist.ReduceOp.SUM)
        mean_loss = lt.item() / world
        losses.append(mean_loss)
        times.append(ms)
        log(f"step {step:4d}  loss {mean_loss:.4f}  time {ms:8.1f} ms  lr {lr:.2e}")

    timed = times[10:] if len(times) > 10 else times
    result = {
        "comm": args.comm,
        "mean_step_ms": sum(timed) / len(timed),
        "final_loss": sum(losses[-5:]) / len(losses[-5:]),
        "params": n_params,
        "first_loss": losses[0],
        "world_size": world,
        "batch_per_gpu": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "bf16": args.bf16,
        "tokens_per_s": world * args.batch * args.seq / (sum(timed) / len(timed) / 1e3),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }
    if args.comm == "torch-powersgd":
        result["powersgd_rank"] = args.powersgd_rank
    if sqz_state is not None:
        s = sqz_state.stats()
        result["sqz_method"] = sqz_state.ctx.method
        result["sqz_stats"] = s
        adapt = sqz_state.adapt()
        if adapt:
            result["sqz_adapt"] = {k: sum(a[k] for a in adapt)
                                   for k in ("bytes", "bytes_uniform", "error", "budget")}
            result["sqz_adapt_levels"] = [a["levels"] for a in adapt]
        if args.sqz_stats:
            sqz_state.write_stats_json(args.sqz_stats)
        sqz_state.close()
    elif os.environ.get("SQZ_METHOD"):
        result["sqz_method"] = os.environ["SQZ_METHOD"]
    emit_result(result, rank, args.json)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

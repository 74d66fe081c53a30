"""Adam at one bit, W workers simulated in one process (CPU, or one GPU): what 1-bit Adam, 0/1 Adam
and gradient-level compression do to training, without a network or a second GPU.

    /usr/bin/python3 bench/adam/adam_sim.py --model gpt --workers 4 --opt onebit
    /usr/bin/python3 bench/adam/adam_sim.py --model mlp --workers 8 --opt zeroone --steps 600
    python bench/adam/adam_sim.py --device cuda --exchange mirror --model gpt --vocab 32768 \\
        --d-model 768 --layers 12 --heads 12 --seq 256 --batch 8 --steps 1000 --opt onebit

Each worker is a thread with its own replica of the model, its own data shard and its own
optimizer, the real one:
  adamw      torch.optim.AdamW on gradients averaged exactly (the dense baseline)
  onebit     squeeze.optim.OneBitAdam (AdamW for --freeze-step steps, then the momentum averaged
             with sign compression and two-level error feedback, the variance frozen)
  zeroone    squeeze.optim.ZeroOneAdam (--var-freeze-step, --var-update-scaler,
             --local-step-scaler, --local-step-clipper)
  grad-sign, grad-topk, grad-quant
             AdamW on gradients averaged by Squeeze's compressed all-reduce with the library's
             defaults (what LD_PRELOAD does to an Adam job): sign with one scale per 4096
             elements and error feedback, top-k 1 % with EF21, 4-bit max-min quantization with
             error feedback
The exchanges (--exchange):
  squeeze    the library itself: a squeeze.LocalGroup of W ranks (host memory: on a GPU every
             exchange is copied through the host) with --method sign (or quant for the momentum)
  mirror     SignMirror below, a torch re-implementation of the library's two-phase sign
             all-reduce (the same chunks, buckets, scales and error feedback: tests/python/
             test_optim.py checks it against the library), on the tensors' device: the fast path
             of a one-GPU simulation; sign only
Gradients of dense steps are averaged in rank order (bit-identical on every worker).  Each
worker clips its own gradient to --grad-clip before any exchange.

Models (--model):
  gpt   examples/pytorch/ddp_train.py's transformer and Markov-chain data (worker w draws the
        shard that script's rank w draws); the loss is the mean over workers of their batch
        cross-entropy, final_loss the mean of the last 5 steps (as ddp_train.py)
  mlp   examples/sqz_mlp_train.c's task in PyTorch: the same data and initialization bit for bit
        (its splitmix64 streams), 64-256-256-10 ReLU, batch 64 per worker; also reports the test
        accuracy of worker 0's model

Bytes per step are what one rank sends: a dense step 2 (W-1)/W * 4 N (a ring all-reduce of
float32); a compressed exchange what the library counts (bytes_sent: phase 1 the payloads of the
W-1 chunks of the others, phase 2 its own chunk's W-1 times, frame headers included) or, for the
mirror, the same payloads without frame headers; 0/1 Adam's local steps nothing.  Prints the loss every 50 steps
and a final line "RESULT {json}"; --out writes the whole record.
"""
import argparse
import copy
import json
import math
import os
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "examples", "pytorch"))

import squeeze  # noqa: E402
import squeeze.optim  # noqa: E402

OPTS = ("adamw", "onebit", "zeroone", "grad-sign", "grad-topk", "grad-quant")


# -------------------------------------------------------------------------------------------------
# Exchanges among threads
# -------------------------------------------------------------------------------------------------
class ThreadMean:
    """Dense averaging of W threads' tensors: every thread gets sum in rank order / W, the same
    bits everywhere (as a dense all-reduce gives)."""

    def __init__(self, nranks):
        self.nranks = nranks
        self.barrier = threading.Barrier(nranks)
        self.slots = [None] * nranks

    def __call__(self, rank, tensors):
        self.slots[rank] = [t.clone() for t in tensors]
        self.barrier.wait()
        for i, t in enumerate(tensors):
            acc = self.slots[0][i].clone()
            for r in range(1, self.nranks):
                acc += self.slots[r][i]
            t.copy_(acc / self.nranks)
        self.barrier.wait()


def chunk_layout(n, nranks, quantum=512):
    """The library's scatter-reduce chunks (src/coll/sqz_coll_reduce_scatter.c): per = ceil(n / P)
    rounded up to a multiple of 512; chunk r = [r * per, min(n, (r + 1) * per))."""
    per = -(-n // nranks)
    per = -(-per // quantum) * quantum
    return [(min(r * per, n), min((r + 1) * per, n)) for r in range(nranks)]


def sign_payload_bytes(length, bucket=4096):
    """plugins/sign's payload of `length` elements: one f32 scale per bucket, one bit each."""
    return 4 * (-(-length // bucket)) + (-(-length // 8))


class SignMirror:
    """The library's two-phase sign all-reduce with worker and server error feedback
    (sqz_ef_allreduce with SQZ_METHOD=sign, SQZ_SIGN_SCALE=l1, SQZ_SIGN_BUCKET=bucket), computed
    for all W ranks at once by the last thread to arrive:
      a = x + e_w; per bucket of each rank's chunk layout s = mean |a| (summed in float64);
      d = a >= 0 ? s : -s; e_w = a - d; y = sum of d over ranks in rank order; a2 = y + e_s;
      per bucket s2 = mean |a2|; d2 = a2 >= 0 ? s2 : -s2; e_s = a2 - d2; out = d2 * (1 / W).
    endpoint(rank) gives the object squeeze.optim takes as its comm."""

    def __init__(self, nranks, bucket=4096):
        self.nranks = nranks
        self.bucket = bucket
        self.arrive = threading.Barrier(nranks, action=self._reduce)
        self.leave = threading.Barrier(nranks)
        self.slots = [None] * nranks
        self.key = None
        self.worker_err = {}  # key -> [n] per rank
        self.server_err = {}  # key -> [n]
        self.layout = {}  # (n, device) -> (bucket index per element, counts)
        self.bytes_sent = 0  # by rank 0, payloads only

    def endpoint(self, rank):
        return _MirrorEndpoint(self, rank)

    def _buckets(self, n, device):
        got = self.layout.get((n, device))
        if got is None:
            idx, base = torch.empty(n, dtype=torch.long), 0
            for a, b in chunk_layout(n, self.nranks):
                m = b - a
                idx[a:b] = base + torch.arange(m) // self.bucket
                base += -(-m // self.bucket)
            idx = idx.to(device)
            counts = torch.bincount(idx, minlength=base).to(torch.float64)
            got = self.layout[(n, device)] = (idx, counts)
        return got

    def _sign(self, a, idx, counts):
        """(decoded, residual) of a [n] through per-bucket scaled sign."""
        sums = torch.zeros(counts.numel(), dtype=torch.float64, device=a.device)
        sums.index_add_(0, idx, a.abs().to(torch.float64))
        s = (sums / counts).to(torch.float32).index_select(0, idx)
        d = torch.where(a >= 0, s, -s)
        return d, a - d

    def _reduce(self):
        """One rank at a time (the peak memory of one rank's temporaries), summed in rank order."""
        n, key = self.slots[0].numel(), self.key
        device = self.slots[0].device
        idx, counts = self._buckets(n, device)
        errs = self.worker_err.get(key)
        if errs is None or len(errs) != self.nranks or errs[0].numel() != n:
            errs = [torch.zeros(n, device=device) for _ in range(self.nranks)]
        y = None
        for r in range(self.nranks):
            d, errs[r] = self._sign(self.slots[r] + errs[r], idx, counts)
            y = d if y is None else y.add_(d)
        self.worker_err[key] = errs
        e_s = self.server_err.get(key)
        if e_s is None or e_s.numel() != n:
            e_s = torch.zeros_like(y)
        d2, self.server_err[key] = self._sign(y.add_(e_s), idx, counts)
        out = d2.mul_(torch.tensor(1.0 / self.nranks, dtype=torch.float32))
        for r in range(self.nranks):
            self.slots[r].copy_(out)
        chunks = chunk_layout(n, self.nranks)
        mine = sign_payload_bytes(chunks[0][1] - chunks[0][0], self.bucket)
        self.bytes_sent += sum(sign_payload_bytes(b - a, self.bucket) for a, b in chunks[1:]) \
            + mine * (self.nranks - 1)


class _MirrorEndpoint:
    def __init__(self, group, rank):
        self.group, self.rank = group, rank

    def ef_allreduce_tensor(self, t, key):
        g = self.group
        if t.dtype != torch.float32:
            raise TypeError("SignMirror: float32 only")
        g.slots[self.rank] = t
        g.key = key
        g.arrive.wait()  # the last thread to arrive reduces (the Barrier's action)
        g.leave.wait()  # nobody reuses the slots before every thread has its result

    def ef_forget(self, key):
        self.group.worker_err.pop(key, None)
        self.group.server_err.pop(key, None)

    def state_dict(self):
        g = self.group
        return {"worker": {k: v[self.rank].clone() for k, v in g.worker_err.items()},  # noqa
                "server": {k: v.clone() for k, v in g.server_err.items()}}

    def load_state_dict(self, state):
        raise NotImplementedError("SignMirror keeps no checkpoints")


# -------------------------------------------------------------------------------------------------
# Tasks
# -------------------------------------------------------------------------------------------------
class GptTask:
    def __init__(self, a, device):
        from ddp_train import GPT, MarkovChain
        torch.manual_seed(a.seed)
        self.model = GPT(a.vocab, a.seq, a.d_model, a.layers, a.heads, a.mlp_ratio).to(device)
        chain = MarkovChain(a.vocab, a.chain_k, a.seed)
        self.data = [chain.sample(a.steps * a.batch, a.seq + 1,
                                  seed=a.seed * 1000 + 1 + w).to(device)
                     for w in range(a.workers)]
        self.a = a
        self.extra = {"entropy_rate": chain.cond_entropy, "uniform_loss": math.log(a.vocab)}

    def loss(self, model, w, step):
        b = self.data[w][step * self.a.batch:(step + 1) * self.a.batch]
        x, y = b[:, :-1], b[:, 1:]
        with torch.autocast(device_type=b.device.type, dtype=torch.bfloat16,
                            enabled=self.a.bf16):
            logits = model(x)
        return F.cross_entropy(logits.float().reshape(-1, self.a.vocab), y.reshape(-1))

    def param_groups(self, model, wd):
        params = list(model.parameters())
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def evaluate(self, model):
        return {}


_GAMMA = np.uint64(0x9e3779b97f4a7c15)


def splitmix(seed, stream, count, first=0):
    """Calls first .. first + count - 1 of examples/sqz_mlp_train.c's rng_make(seed, stream)
    stream (rng_next after the one rng_make makes)."""
    with np.errstate(over="ignore"):
        s0 = np.uint64(seed) * np.uint64(0x2545f4914f6cdd1d) + np.uint64(stream) * _GAMMA \
            + np.uint64(1)
        z = s0 + (np.arange(first, first + count, dtype=np.uint64) + np.uint64(2)) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        return z ^ (z >> np.uint64(31))


def normals_from(u64):
    """rng_normal's Box-Muller over consecutive pairs of calls: cos, then sin (the spare)."""
    u = (u64 >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    u1, u2 = np.maximum(u[0::2], 1e-300), u[1::2]
    rad = np.sqrt(-2.0 * np.log(u1))
    out = np.empty(u.size, dtype=np.float32)
    out[0::2] = (rad * np.cos(2.0 * np.pi * u2)).astype(np.float32)
    out[1::2] = (rad * np.sin(2.0 * np.pi * u2)).astype(np.float32)
    return out


class MlpTask:
    N_IN, N_H, N_OUT, CLUSTERS, N_TRAIN, N_TEST, SEP = 64, 256, 10, 2, 8192, 4000, 0.5

    def __init__(self, a, device):
        c = self
        centres = c.SEP * normals_from(splitmix(a.seed, 1, c.N_OUT * c.CLUSTERS * c.N_IN))
        centres = centres.reshape(c.N_OUT * c.CLUSTERS, c.N_IN).astype(np.float32)
        self.train = [self._dataset(a.seed, 1000 + w, c.N_TRAIN, centres, device)
                      for w in range(a.workers)]
        self.test = self._dataset(a.seed, 3, c.N_TEST, centres, device)
        self.model = self._model(a.seed).to(device)
        self.order = [self._order(a, w) for w in range(a.workers)]
        self.a = a
        self.extra = {}

    def _dataset(self, seed, stream, n, centres, device):
        per = 2 + self.N_IN  # calls per sample: class, cluster, 64 normals
        z = splitmix(seed, stream, n * per).reshape(n, per)
        y = (z[:, 0] % np.uint64(self.N_OUT)).astype(np.int64)
        k = (z[:, 1] % np.uint64(self.CLUSTERS)).astype(np.int64)
        noise = normals_from(z[:, 2:].reshape(-1)).reshape(n, self.N_IN)
        x = centres[y * self.CLUSTERS + k] + noise
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def _model(self, seed):
        sizes = [(self.N_IN, self.N_H), (self.N_H, self.N_H), (self.N_H, self.N_OUT)]
        z = normals_from(splitmix(seed, 2, sum(i * o for i, o in sizes)))
        layers, off = [], 0
        for i, o in sizes:
            lin = torch.nn.Linear(i, o)
            w = z[off:off + i * o].reshape(i, o) * np.float32(math.sqrt(2.0 / i))
            off += i * o
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.zero_()
            layers += [lin, torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1])

    def _order(self, a, w):
        """The sample indices worker w's batches take, epoch after epoch (Fisher-Yates with
        rng stream 2000 + w, as the C example shuffles)."""
        need = a.steps * a.batch
        z, used, out = None, 0, []
        while len(out) < need:
            n = self.N_TRAIN
            z = splitmix(a.seed, 2000 + w, n - 1, first=used)
            used += n - 1
            perm = list(range(n))
            for j, i in enumerate(range(n - 1, 0, -1)):
                r = int(z[j] % np.uint64(i + 1))
                perm[i], perm[r] = perm[r], perm[i]
            out += perm
        return torch.tensor(out[:need])

    def loss(self, model, w, step):
        idx = self.order[w][step * self.a.batch:(step + 1) * self.a.batch].to(
            self.train[w][0].device)
        return F.cross_entropy(model(self.train[w][0][idx]), self.train[w][1][idx])

    def param_groups(self, model, wd):
        return [{"params": list(model.parameters()), "weight_decay": wd}]

    @torch.no_grad()
    def evaluate(self, model):
        x, y = self.test
        return {"test_accuracy": float((model(x).argmax(1) == y).float().mean())}


# -------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------
def make_exchange(a, device):
    """(per-rank comms, a bytes counter, closer) of the method's exchange, or Nones for adamw."""
    if a.opt == "adamw":
        return None, None, lambda: None
    method = {"grad-sign": "sign", "grad-topk": "topk", "grad-quant": "quant"}.get(a.opt,
                                                                                   a.method)
    if a.exchange == "mirror":
        if method != "sign":
            raise SystemExit(f"--exchange mirror does sign only, not {method}")
        mirror = SignMirror(a.workers)
        return [mirror.endpoint(r) for r in range(a.workers)], lambda: mirror.bytes_sent, \
            lambda: None
    params = {"method": method}
    for kv in a.sqz:
        k, v = kv.split("=", 1)
        params[k] = v
    group = squeeze.LocalGroup(a.workers, **params)
    return group.comms, lambda: group.contexts[0].stats_json()["bytes_sent"], group.close


class HostGradientExchange:
    """AdamW on gradients averaged by the library's compressed all-reduce (sqz_allreduce, the
    path LD_PRELOAD takes): the gradients packed into one float32 host buffer."""

    def __init__(self, comm, params):
        self.comm, self.params = comm, params
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=torch.float32)

    def __call__(self):
        torch.cat([p.grad.reshape(-1).cpu() for p in self.params], out=self.flat)
        self.comm.allreduce(self.flat.data_ptr(), self.flat.numel(), "float32", "avg", key=1)
        off = 0
        for p in self.params:
            p.grad.copy_(self.flat[off:off + p.numel()].view_as(p.grad))
            off += p.numel()


class MirrorGradientExchange:
    """Gradient-level sign with error feedback on the device (SignMirror under key 1)."""

    def __init__(self, endpoint, params):
        self.endpoint, self.params = endpoint, params
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=torch.float32,
                                device=params[0].device)

    def __call__(self):
        torch.cat([p.grad.reshape(-1) for p in self.params], out=self.flat)
        self.endpoint.ef_allreduce_tensor(self.flat, 1)
        off = 0
        for p in self.params:
            p.grad.copy_(self.flat[off:off + p.numel()].view_as(p.grad))
            off += p.numel()


def make_optimizer(a, groups, comm, dense):
    kw = dict(lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    if a.opt == "onebit":
        return squeeze.optim.OneBitAdam(groups, comm, freeze_step=a.freeze_step,
                                        dense_allreduce=dense,
                                        precondition=not a.no_precondition, **kw)
    if a.opt == "zeroone":
        return squeeze.optim.ZeroOneAdam(groups, comm, var_freeze_step=a.var_freeze_step,
                                         var_update_scaler=a.var_update_scaler,
                                         local_step_scaler=a.local_step_scaler,
                                         local_step_clipper=a.local_step_clipper,
                                         dense_allreduce=dense,
                                         precondition=not a.no_precondition, **kw)
    return torch.optim.AdamW(groups, **kw)


def worker(a, task, replicas, comms, mean, w, record):
    model = replicas[w]
    params = list(model.parameters())
    groups = task.param_groups(model, a.weight_decay)
    dense = (lambda grads: mean(w, grads))
    comm = comms[w] if comms is not None else None
    opt = make_optimizer(a, groups, comm, dense)
    grad_xchg = None
    if a.opt.startswith("grad-"):
        grad_xchg = (MirrorGradientExchange if a.exchange == "mirror"
                     else HostGradientExchange)(comm, params)
    for step in range(a.steps):
        lr = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = task.loss(model, w, step)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        if a.opt == "adamw":
            mean(w, [p.grad for p in params])
        elif grad_xchg is not None:
            grad_xchg()
        opt.step()
        record["loss"][w][step] = loss.item()
        if w == 0:
            kind = getattr(opt, "last_exchange", "dense" if a.opt == "adamw" else "compressed")
            record["kind"][step] = kind
            record["bytes"][step] = record["bytes_now"]()
            if step % 50 == 0 or step == a.steps - 1:
                print(f"{a.name} step {step:4d} loss {loss.item():.4f} {kind} "
                      f"t {time.time() - record['t0']:.0f}s", flush=True)
            if a.out and step % 100 == 99:
                # A run cut short (a time limit) leaves its curve so far.
                with open(a.out + ".partial", "w") as f:
                    json.dump({"steps_done": step + 1, "loss_worker0": record["loss"][0][:step + 1],
                               "kind": record["kind"][:step + 1],
                               "bytes": record["bytes"][:step + 1]}, f)
    record["opt"][w] = opt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("gpt", "mlp"), default="gpt")
    ap.add_argument("--opt", choices=OPTS, default="onebit")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--exchange", choices=("squeeze", "mirror"), default="squeeze")
    ap.add_argument("--method", default="sign", help="the momentum exchange (sign or quant)")
    ap.add_argument("--sqz", action="append", default=[], metavar="NAME=VALUE",
                    help="a Squeeze parameter of the exchange (e.g. sign_bucket=4096)")
    ap.add_argument("--freeze-step", type=int, default=-1, help="onebit (-1: 15 %% of steps)")
    ap.add_argument("--no-precondition", action="store_true",
                    help="onebit, zeroone: exchange the momentum and gradient themselves "
                         "(precondition=False)")
    ap.add_argument("--var-freeze-step", type=int, default=-1, help="zeroone (-1: 15 %%)")
    ap.add_argument("--var-update-scaler", type=int, default=16)
    ap.add_argument("--local-step-scaler", type=int, default=-1,
                    help="zeroone (-1: 10 %% of the steps)")
    ap.add_argument("--local-step-clipper", type=int, default=4,
                    help="zeroone: H, the longest local interval (DeepSpeed: 16)")
    ap.add_argument("--batch", type=int, default=0, help="per worker (0: 16 gpt, 64 mlp)")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp-ratio", type=int, default=4)
    ap.add_argument("--chain-k", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.0, help="0: 1e-3 gpt, 2e-3 mlp")
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--warmup", type=int, default=-1, help="lr warm-up steps (-1: 5 %%)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="gpt: bfloat16 autocast of the forward")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--name", default="")
    ap.add_argument("--out", help="write the whole record as JSON here")
    a = ap.parse_args()
    a.batch = a.batch or (16 if a.model == "gpt" else 64)
    a.lr = a.lr or (1e-3 if a.model == "gpt" else 2e-3)
    a.freeze_step = a.freeze_step if a.freeze_step > 0 else max(1, int(0.15 * a.steps))
    a.var_freeze_step = a.var_freeze_step if a.var_freeze_step > 0 else max(1, int(0.15 * a.steps))
    a.local_step_scaler = (a.local_step_scaler if a.local_step_scaler > 0
                           else max(1, a.steps // 10))
    a.warmup = a.warmup if a.warmup >= 0 else max(1, a.steps // 20)
    a.name = a.name or f"{a.model}-{a.opt}-W{a.workers}"
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    task = (GptTask if a.model == "gpt" else MlpTask)(a, dev)
    n_params = sum(p.numel() for p in task.model.parameters())
    replicas = [copy.deepcopy(task.model) for _ in range(a.workers)]
    comms, bytes_now, close = make_exchange(a, dev)
    record = {"loss": [[0.0] * a.steps for _ in range(a.workers)], "kind": [None] * a.steps,
              "bytes": [0] * a.steps, "opt": [None] * a.workers, "t0": time.time(),
              "bytes_now": bytes_now or (lambda: 0)}
    mean = ThreadMean(a.workers)
    errors = []

    def main_of(w):
        try:
            worker(a, task, replicas, comms, mean, w, record)
        except BaseException as e:  # noqa: B902 (reported below)
            errors.append(e)
            mean.barrier.abort()
            raise

    threads = [threading.Thread(target=main_of, args=(w,)) for w in range(a.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close()
    if errors:
        raise SystemExit(f"{a.name}: a worker failed: {errors[0]!r}")

    dense_bytes = 2 * (a.workers - 1) / a.workers * 4 * n_params
    per_step, prev = [], 0
    for kind, cum in zip(record["kind"], record["bytes"]):
        per_step.append(dense_bytes if kind == "dense" else cum - prev)
        prev = cum
    losses = [sum(record["loss"][w][s] for w in range(a.workers)) / a.workers
              for s in range(a.steps)]
    flat = [torch.cat([p.detach().reshape(-1).cpu() for p in m.parameters()]) for m in replicas]
    last = record["opt"][0]
    synced = not (a.opt == "zeroone" and last.sq.get("since_sync", 0) > 0)
    identical = all(torch.equal(flat[0], f) for f in flat[1:])
    warm = a.freeze_step if a.opt == "onebit" else a.var_freeze_step if a.opt == "zeroone" else 0
    res = {"name": a.name, "model": a.model, "opt": a.opt, "workers": a.workers,
           "exchange": a.exchange, "params": n_params, "steps": a.steps,
           "final_loss": sum(losses[-5:]) / 5,
           "bytes_per_step": sum(per_step) / a.steps,
           "bytes_per_step_after_warmup": sum(per_step[warm:]) / max(1, a.steps - warm),
           "dense_bytes_per_step": dense_bytes,
           "dense_steps": sum(1 for k in record["kind"] if k == "dense"),
           "skipped_steps": getattr(last, "skipped_steps", 0),
           "replicas_identical": identical if synced else None,
           "seconds": time.time() - record["t0"]}
    res.update(task.extra)
    res.update(task.evaluate(replicas[0]))
    print("RESULT", json.dumps(res), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(res, losses=losses, bytes=per_step, kind=record["kind"],
                           args={k: v for k, v in vars(a).items()}), f)
    if synced and not identical:
        raise SystemExit(f"{a.name}: the replicas differ")


if __name__ == "__main__":
    main()

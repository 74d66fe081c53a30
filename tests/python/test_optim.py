"""squeeze.optim (1-bit Adam, 0/1 Adam) on W ranks in threads of one process (squeeze.LocalGroup),
CPU only:
  - the dense steps are torch.optim.AdamW's, bit for bit;
  - every rank holds the same parameters after every synchronized step, and training converges;
  - a checkpoint taken mid-run (0/1 Adam: inside a local interval) continues bit for bit;
  - a NaN on one rank skips the step on every rank;
  - bad arguments raise SqueezeError naming the argument;
  - bench/adam's SignMirror (the one-GPU simulation's exchange) gives the library's bits.
Skips (77) without PyTorch."""
import copy
import os
import sys
import tempfile
import threading

try:
    import torch
except ImportError:
    print("SKIP: no PyTorch")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "adam"))

import squeeze  # noqa: E402
import squeeze.optim as so  # noqa: E402
from adam_sim import SignMirror, ThreadMean  # noqa: E402

torch.set_num_threads(1)
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


W = 4
torch.manual_seed(0)
BASE = torch.nn.Sequential(torch.nn.Linear(16, 48), torch.nn.Tanh(), torch.nn.Linear(48, 3))
TEACHER = torch.randn(16, 3, generator=torch.Generator().manual_seed(7))
_copy_lock = threading.Lock()


def replica():
    with _copy_lock:
        return copy.deepcopy(BASE)


def batch(rank, step):
    g = torch.Generator().manual_seed(1000 * rank + step)
    x = torch.randn(32, 16, generator=g)
    return x, torch.tanh(x @ TEACHER)


def loss_of(model, rank, step):
    x, y = batch(rank, step)
    return ((model(x) - y) ** 2).mean()


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def make(cls, model, comm, mean, rank, **kw):
    return cls(model.parameters(), comm, lr=3e-3, weight_decay=0.01,
               dense_allreduce=lambda grads: mean(rank, grads), **kw)


def train(cls, kw, steps, group=None, mean=None, nan_at=None, start=0, states=None,
          models=None):
    """Runs `steps` steps from step `start` on W threads; returns (models, optimizers,
    losses[rank][step]); the optimizers' state_dict() at the end is in opt.saved."""
    own = group is None
    group = group or squeeze.LocalGroup(W, method="sign")
    mean = mean or ThreadMean(W)
    models = models or [replica() for _ in range(W)]
    opts, losses = [None] * W, [[] for _ in range(W)]

    def rank_main(rank, comm):
        opt = make(cls, models[rank], comm, mean, rank, **kw)
        if states is not None:
            opt.load_state_dict(states[rank])
        for step in range(start, start + steps):
            loss = loss_of(models[rank], rank, step)
            opt.zero_grad()
            loss.backward()
            if step == nan_at and rank == 1:
                next(models[rank].parameters()).grad[0, 0] = float("nan")
            opt.step()
            losses[rank].append(loss.item())
        opt.saved = copy.deepcopy(opt.state_dict())  # while the Comm is open
        opts[rank] = opt

    try:
        group.run(rank_main)
    finally:
        if own:
            group.close()
    return models, opts, losses


def test_warmup_is_adamw():
    """The dense steps: AdamW on the gradients averaged in rank order, bit for bit."""
    ref = replica()
    adamw = torch.optim.AdamW(ref.parameters(), lr=3e-3, weight_decay=0.01)
    steps = 12
    for step in range(steps):
        grads = []
        for rank in range(W):
            ref.zero_grad()
            loss_of(ref, rank, step).backward()
            grads.append([p.grad.clone() for p in ref.parameters()])
        for i, p in enumerate(ref.parameters()):
            acc = grads[0][i].clone()
            for r in range(1, W):
                acc += grads[r][i]
            p.grad = acc / W
        adamw.step()
    for cls, kw in ((so.OneBitAdam, dict(freeze_step=steps)),
                    (so.ZeroOneAdam, dict(var_update_scaler=steps, var_freeze_step=1000))):
        models, opts, _ = train(cls, kw, steps)
        check(all(torch.equal(flat(m), flat(ref)) for m in models),
              f"{cls.__name__}: the first {steps} steps differ from torch.optim.AdamW")
        check(all(o.last_exchange == "dense" for o in opts), f"{cls.__name__}: not dense")
    print("warm-up: OneBitAdam and ZeroOneAdam match torch.optim.AdamW bit for bit")


def test_replicas_and_convergence():
    """Sign momentum (the default) and 4-bit quant momentum: the method is the Comm's."""
    cases = ((so.OneBitAdam, dict(freeze_step=20), "sign"),
             (so.ZeroOneAdam, dict(var_freeze_step=40, var_update_scaler=4,
                                   local_step_scaler=20, local_step_clipper=4), "sign"),
             (so.OneBitAdam, dict(freeze_step=20), "quant"),
             (so.OneBitAdam, dict(freeze_step=20, precondition=False), "sign"),
             (so.ZeroOneAdam, dict(var_freeze_step=40, var_update_scaler=4, local_step_scaler=20,
                                   local_step_clipper=4, precondition=False), "sign"))
    for cls, kw, method in cases:
        with squeeze.LocalGroup(W, method=method, quant_bits=4) as group:
            models, opts, losses = train(cls, kw, 160, group=group)
        same = all(torch.equal(flat(models[0]), flat(m)) for m in models)
        check(same, f"{cls.__name__}: the replicas differ after 160 steps")
        first = sum(losses[0][:10]) / 10
        last = sum(losses[0][-10:]) / 10
        check(last < 0.3 * first, f"{cls.__name__}: loss {first:.4f} -> {last:.4f}")
        check(opts[0].last_exchange == "compressed" and opts[0].skipped_steps == 0,
              f"{cls.__name__}: the last step did not exchange compressed")
        print(f"{cls.__name__} ({method}, {kw}): replicas identical, "
              f"loss {first:.4f} -> {last:.4f}")


def test_checkpoint():
    """Stopped after 37 steps (1-bit: compressing; 0/1: inside a local interval of 4), restarted
    in new ranks, new communicators and new optimizers: the same bits as the whole run."""
    cases = ((so.OneBitAdam, dict(freeze_step=20)),
             (so.ZeroOneAdam, dict(var_freeze_step=24, var_update_scaler=4,
                                   local_step_scaler=4, local_step_clipper=4)))
    for cls, kw in cases:
        whole, _, _ = train(cls, kw, 60)
        first, opts, _ = train(cls, kw, 37)
        states = [o.saved for o in opts]
        if cls is so.ZeroOneAdam:
            check(opts[0].sq["since_sync"] > 0, "the cut is not inside a local interval")
        rest, _, _ = train(cls, kw, 23, start=37, states=states, models=first)
        same = all(torch.equal(flat(a), flat(b)) for a, b in zip(whole, rest))
        check(same, f"{cls.__name__}: the resumed run differs")
        print(f"{cls.__name__}: checkpoint at step 37 resumes "
              f"{'bit for bit' if same else 'DIFFERENTLY'}")
        # A state of the other algorithm, or of plain AdamW, is refused and changes nothing.
        other = so.ZeroOneAdam if cls is so.OneBitAdam else so.OneBitAdam
        with squeeze.LocalGroup(1, method="sign") as g:
            m = replica()
            o = other(m.parameters(), g.comms[0], freeze_step=5) if other is so.OneBitAdam \
                else other(m.parameters(), g.comms[0])
            for bad in (states[0], torch.optim.AdamW(m.parameters()).state_dict()):
                try:
                    o.load_state_dict(bad)
                    check(False, f"{other.__name__} took a foreign state_dict")
                except squeeze.SqueezeError as e:
                    check("state_dict" in str(e), f"unclear error: {e}")


def test_nonfinite():
    models, opts, _ = train(so.OneBitAdam, dict(freeze_step=5), 12, nan_at=8)
    check(all(o.skipped_steps == 1 for o in opts), "a NaN step was not skipped on every rank")
    check(all(torch.equal(flat(models[0]), flat(m)) for m in models), "replicas differ after NaN")
    check(all(torch.isfinite(flat(m)).all() for m in models), "a NaN reached the parameters")
    print("a NaN on rank 1: the step is skipped on every rank, replicas identical")


def expect_error(what, fn, words):
    try:
        fn()
        check(False, f"{what}: no error")
    except squeeze.SqueezeError as e:
        check(all(w in str(e) for w in words), f"{what}: unclear error {e}")


def test_bad_arguments():
    with squeeze.LocalGroup(1, method="sign") as g:
        comm, m = g.comms[0], replica()
        P = lambda: m.parameters()  # noqa: E731
        expect_error("lr", lambda: so.OneBitAdam(P(), comm, lr=-1), ["lr=-1"])
        expect_error("betas", lambda: so.OneBitAdam(P(), comm, betas=(1.0, 0.9)), ["betas[0]"])
        expect_error("betas pair", lambda: so.OneBitAdam(P(), comm, betas=0.9), ["pair"])
        expect_error("eps", lambda: so.OneBitAdam(P(), comm, eps=float("nan")), ["eps"])
        expect_error("freeze_step", lambda: so.OneBitAdam(P(), comm, freeze_step=0),
                     ["freeze_step=0"])
        expect_error("var_update_scaler",
                     lambda: so.ZeroOneAdam(P(), comm, var_update_scaler=0),
                     ["var_update_scaler"])
        expect_error("local_step_clipper",
                     lambda: so.ZeroOneAdam(P(), comm, local_step_clipper=1.5),
                     ["local_step_clipper"])
        expect_error("comm", lambda: so.OneBitAdam(P(), "nccl"), ["squeeze.Comm"])
        expect_error("precondition", lambda: so.OneBitAdam(P(), comm, precondition=1),
                     ["precondition=1"])
        sd = so.OneBitAdam(P(), comm, precondition=False).state_dict()
        expect_error("precondition mismatch",
                     lambda: so.OneBitAdam(P(), comm).load_state_dict(sd), ["precondition=False"])
        expect_error("dense_allreduce", lambda: so.OneBitAdam(P(), comm, dense_allreduce=3),
                     ["dense_allreduce"])
        mixed = [torch.nn.Parameter(torch.zeros(3)),
                 torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
        expect_error("mixed group", lambda: so.OneBitAdam(mixed, comm), ["mixes"])
        expect_error("hook", lambda: so.register_ddp_hook(m, torch.optim.AdamW(P())),
                     ["squeeze.optim"])
        closed = squeeze.LocalGroup(1, method="sign")
        c = closed.comms[0]
        closed.close()
        expect_error("closed comm", lambda: so.OneBitAdam(P(), c), ["closed"])
        # A host Comm and bfloat16 parameters: the library refuses the dtype at the first
        # compressed step, with its status, on every rank alike.
        bf = [torch.nn.Parameter(torch.ones(64, dtype=torch.bfloat16))]
        opt = so.OneBitAdam(bf, comm, freeze_step=1)
        for _ in range(2):
            bf[0].grad = torch.ones_like(bf[0])
            try:
                opt.step()
            except squeeze.SqueezeError as e:
                check("sqz_ef_allreduce" in str(e), f"bf16 on a host Comm: {e}")
                break
        else:
            check(False, "bf16 on a host Comm: no error")
    # A method whose classic error feedback diverges: it runs, with one warning from the library.
    with squeeze.LocalGroup(1, method="topk") as g:
        p = [torch.nn.Parameter(torch.ones(5000))]
        opt = so.OneBitAdam(p, g.comms[0], freeze_step=1, dense_allreduce=lambda grads: None)
        err = stderr_of(lambda: [step_with(opt, p) for _ in range(2)])
        check("SQZ_METHOD=topk" in err and "sign or quant" in err,
              f"top-k momentum: no warning from the library ({err!r})")
    print("bad arguments: clear errors")


def step_with(opt, params):
    for q in params:
        q.grad = torch.ones_like(q)
    opt.step()


def stderr_of(fn):
    """What fn writes on file descriptor 2 (the library's log lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        return f.read().decode(errors="replace")


def test_mirror_matches_library():
    """SignMirror, the one-GPU simulation's exchange, against sqz_ef_allreduce: the same bits
    over 6 calls with error feedback (n not a multiple of the chunk quantum)."""
    n, steps = 23456, 6
    data = [[torch.randn(n, generator=torch.Generator().manual_seed(100 * r + s))
             for s in range(steps)] for r in range(W)]
    lib = [[t.clone() for t in row] for row in data]
    mir = [[t.clone() for t in row] for row in data]
    with squeeze.LocalGroup(W, method="sign") as g:
        g.run(lambda r, c: [c.ef_allreduce(t.data_ptr(), n, "float32", key=9) for t in lib[r]])
    mirror = SignMirror(W)
    threads = [threading.Thread(target=lambda r=r: [mirror.endpoint(r).ef_allreduce_tensor(t, 9)
                                                    for t in mir[r]]) for r in range(W)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worst = max(float((a - b).abs().max()) for r in range(W) for a, b in zip(lib[r], mir[r]))
    same = all(torch.equal(a, b) for r in range(W) for a, b in zip(lib[r], mir[r]))
    check(worst < 1e-6, f"SignMirror differs from the library by {worst:g}")
    print(f"SignMirror vs the library: {'bit-identical' if same else f'max diff {worst:g}'}")


if __name__ == "__main__":
    test_warmup_is_adamw()
    test_replicas_and_convergence()
    test_checkpoint()
    test_nonfinite()
    test_bad_arguments()
    test_mirror_matches_library()
    if failures:
        print(f"FAIL: {len(failures)} check(s) failed")
        sys.exit(1)
    print("PASS: squeeze.optim")

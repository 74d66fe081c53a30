"""PyTorch + NCCL checks of Squeeze's GPU path, one process per GPU under torchrun.

    torchrun --standalone --nproc_per_node=2 tests/cuda/nccl_torch_check.py --mode preload
    torchrun --standalone --nproc_per_node=2 tests/cuda/nccl_torch_check.py --mode hook

--mode preload: the job runs under LD_PRELOAD=libsqueeze_nccl.so and only calls
  torch.distributed (nccl backend): every all-reduce below reaches the interposer.
--mode hook: no preload; float all-reduces go through the Python binding (squeeze.Comm over a
  dedicated NCCL communicator, sqz_allreduce_async on the current stream), the rest through
  torch.distributed; then a small DDP model trains with squeeze.ddp's communication hook.

Settings come from the SQZ_* environment (the caller sets SQZ_METHOD etc.); --method only picks
the error bounds and the input distribution.  Checks, each printed PASS/FAIL by rank 0 once all
ranks agree:
  exact passthrough: int32 / int64 / float64 SUM, float32 MAX, float32 / float16 / bfloat16 below
    SQZ_MIN_BYTES, equal to the exactly computed result; the same inside dist._coalescing_manager;
  compressed: float32 / float16 / bfloat16 of 1M+ elements, SUM and AVG: bit-identical on every
    rank, relative error to the exact result below the method's bound, and visibly compressed;
  error feedback: SGD on a heterogeneous least-squares problem (rank r holds ||A_r x - b_r||^2,
    x shared, 1M elements) with the all-reduced gradient ends within --conv-tol of the dense
    run's loss; a NaN in one rank's gradient gives NaN on every rank, and the next step is clean;
  ef21 (--only ef21, hook mode, SQZ_METHOD=powersgd SQZ_EF=ef21 SQZ_POWERSGD_START_STEPS=1): a
    layer of full-rank gradients that change by rank 1 per call after the dense first call is
    delivered exactly (the estimators track the change), bit-identical on every rank;
  alloc (hook mode): rank 1 cannot allocate a new buffer's device state; every rank goes dense
    for that buffer (exact sums, counted as fallbacks, no hang).
Exit status 0 when every check passed on every rank, 1 otherwise.
"""
import argparse
import datetime
import hashlib
import math
import os
import sys
import traceback

import torch
import torch.distributed as dist

# Per-method defaults: bound on the relative L2 error of one compressed all-reduce of fresh data
# (no residual yet), the input distribution (uniform keeps max-min quantization honest, a
# normal distribution gives top-k a tail to keep), and how far above dense the error-feedback
# least squares may end.  PowerSGD sends a rank-4 sketch of each 1024 x 1024 pseudo-layer of a
# full-rank gradient: error feedback delivers the rest over later steps, so after 200 steps it
# trails dense by a factor (measured 2.03x on 2 H200s), but it must still converge (the loss
# falls below 0.9 of its start, checked for every method).
METHOD_DEFAULTS = {
    "quant": {"max_rel": 0.15, "dist": "uniform", "conv_tol": 0.05},
    "topk": {"max_rel": 1.0, "dist": "normal", "conv_tol": 0.05},
    "sign": {"max_rel": 1.0, "dist": "uniform", "conv_tol": 0.05},
    "powersgd": {"max_rel": 1.0, "dist": "normal", "conv_tol": 1.5},
}
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
               torch.float64: "float64", torch.int32: "int32", torch.int64: "int64"}
TORCH_OPS = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX}


def parse_size(text):
    text = str(text).strip().upper()
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if text.endswith(suffix):
            text, mult = text[:-1], m
            break
    return int(float(text) * mult)


class Checker:
    """PASS/FAIL lines agreed by every rank (one int32 all-reduce per check: never compressed)."""

    def __init__(self, rank, device):
        self.rank = rank
        self.device = device
        self.failures = 0

    def report(self, ok, name, detail=""):
        if ok is None:
            if self.rank == 0:
                print(f"SKIP {name}" + (f": {detail}" if detail else ""), flush=True)
            return
        bad = torch.tensor([0 if ok else 1], dtype=torch.int32, device=self.device)
        dist.all_reduce(bad, op=dist.ReduceOp.SUM)
        nbad = int(bad.item())
        if not ok:
            print(f"rank {self.rank}: FAIL {name}: {detail}", file=sys.stderr, flush=True)
        if self.rank == 0:
            word = "PASS" if nbad == 0 else "FAIL"
            extra = f" ({nbad} rank(s) failed)" if nbad else ""
            print(f"{word} {name}" + (f": {detail}" if detail else "") + extra, flush=True)
        if nbad:
            self.failures += 1


def digest(t):
    """sha256 of a tensor's bytes (any dtype)."""
    return hashlib.sha256(t.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes()) \
        .hexdigest()


def same_on_all_ranks(value):
    """True when every rank holds the same picklable value (all_gather_object: no all-reduce)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return all(v == out[0] for v in out)


def rel_error(y, exact):
    y = y.detach().double().cpu()
    num = torch.linalg.vector_norm(y - exact).item()
    den = torch.linalg.vector_norm(exact).item()
    return num / den if den > 0 else num


def make_input(r, tag, n, dtype, kind):
    """Rank r's input for check `tag`, rebuilt identically by every rank (CPU generator)."""
    g = torch.Generator().manual_seed(1_000_003 * tag + 7919 * r + 17)
    if kind == "int":
        bound = 1 << 40 if dtype == torch.int64 else 1 << 20
        return torch.randint(-bound, bound, (n,), generator=g, dtype=dtype)
    if kind == "dyadic":      # integers times 2^-10: sums are exact in float64 in any order
        return (torch.randint(-(1 << 20), 1 << 20, (n,), generator=g).to(torch.float64)
                * 2.0 ** -10).to(dtype)
    if kind == "smallint":    # |v| <= 32: sums of a few ranks are exact even in bfloat16
        return torch.randint(-32, 33, (n,), generator=g).to(dtype)
    if kind == "normal":
        return torch.randn(n, generator=g).to(dtype)
    return (torch.rand(n, generator=g) * 2 - 1).to(dtype)   # uniform in [-1, 1)


class Reducer:
    """all-reduce in place: through torch.distributed (preload mode, and everything the binding
    does not take), or through squeeze.Comm (hook mode, float SUM/AVG)."""

    def __init__(self, mode, comm=None):
        self.mode = mode
        self.comm = comm
        self.next_key = 1 << 40

    def uses_squeeze(self, t, op):
        return self.mode == "hook" and t.dtype in FLOATS and op in ("sum", "avg")

    def __call__(self, t, op, key=None, sendbuf=None):
        if self.uses_squeeze(t, op):
            if key is None:
                self.next_key += 1
                key = self.next_key
            self.comm.allreduce_async(t.data_ptr(), t.numel(), DTYPE_NAMES[t.dtype], op, key,
                                      torch.cuda.current_stream(t.device).cuda_stream,
                                      sendbuf=sendbuf)
        else:
            assert sendbuf is None
            dist.all_reduce(t, op=TORCH_OPS[op])


# -------------------------------------------------------------------------------------------------
def check_exact(ck, red, args, world, device, min_bytes):
    """Calls that must pass through exactly."""
    n = args.n
    cases = [
        ("int32 SUM", torch.int32, "int", "sum", n),
        ("int64 SUM", torch.int64, "int", "sum", n),
        ("float64 SUM", torch.float64, "dyadic", "sum", n),
        ("float32 MAX", torch.float32, "uniform", "max", n),
    ]
    n_small = 1000
    if min_bytes > 4 * n_small:
        cases += [
            (f"float32 SUM below SQZ_MIN_BYTES ({4 * n_small} bytes)", torch.float32, "smallint",
             "sum", n_small),
            (f"float16 SUM below SQZ_MIN_BYTES ({2 * n_small} bytes)", torch.float16, "smallint",
             "sum", n_small),
            (f"bfloat16 SUM below SQZ_MIN_BYTES ({2 * n_small} bytes)", torch.bfloat16,
             "smallint", "sum", n_small),
        ]
    else:
        ck.report(None, "small float all-reduces pass through",
                  f"SQZ_MIN_BYTES={min_bytes} leaves no room below it")
    for tag, (name, dtype, kind, op, count) in enumerate(cases, start=100):
        x = make_input(dist.get_rank(), tag, count, dtype, kind)
        if op == "max":
            expect = torch.stack([make_input(r, tag, count, dtype, kind) for r in range(world)]) \
                .max(dim=0).values
        else:
            acc = torch.zeros(count, dtype=torch.float64 if dtype.is_floating_point
                              else torch.int64)
            for r in range(world):
                acc += make_input(r, tag, count, dtype, kind).to(acc.dtype)
            expect = acc.to(dtype)
        y = x.to(device)
        red(y, op)
        got = y.cpu()
        wrong = int((got != expect).sum().item())
        path = "squeeze.Comm" if red.uses_squeeze(y, op) else "torch.distributed"
        ck.report(wrong == 0, f"{name} n={count} via {path}",
                  "exact" if wrong == 0 else f"{wrong} elements differ from the exact result")


def check_coalesced(ck, args, world, device):
    """all-reduces batched by dist._coalescing_manager (one ncclGroupStart/End around them)."""
    cm_fn = getattr(dist, "_coalescing_manager", None)
    if cm_fn is None:
        ck.report(None, "coalesced all-reduces", "this torch has no dist._coalescing_manager")
        return
    n = args.n
    groups = [
        ("int32", [(torch.int32, "int", n), (torch.int32, "int", n + 1)]),
        ("float32", [(torch.float32, METHOD_DEFAULTS[args.method]["dist"], n + 17),
                     (torch.float32, "smallint", 1000),
                     (torch.float32, METHOD_DEFAULTS[args.method]["dist"], n + 29)]),
    ]
    for gi, (gname, specs) in enumerate(groups):
        name = f"coalesced {gname} SUM x{len(specs)}"
        try:
            xs, exacts = [], []
            for j, (dtype, kind, count) in enumerate(specs):
                tag = 200 + 10 * gi + j
                xs.append(make_input(dist.get_rank(), tag, count, dtype, kind).to(device))
                acc = torch.zeros(count, dtype=torch.float64 if dtype.is_floating_point
                                  else torch.int64)
                for r in range(world):
                    acc += make_input(r, tag, count, dtype, kind).to(acc.dtype)
                exacts.append(acc)
            with cm_fn(device=device, async_ops=True) as cm:
                for x in xs:
                    dist.all_reduce(x, op=dist.ReduceOp.SUM)
            cm.wait()
            torch.cuda.synchronize()
            details, ok = [], True
            for x, e, (dtype, kind, count) in zip(xs, exacts, specs):
                if kind in ("int", "smallint"):
                    wrong = int((x.cpu().to(e.dtype) != e).sum().item())
                    ok &= wrong == 0
                    details.append(f"n={count} {'exact' if wrong == 0 else f'{wrong} wrong'}")
                else:
                    same = same_on_all_ranks(digest(x))
                    rel = rel_error(x, e)
                    ok &= same and rel <= args.max_rel and bool(torch.isfinite(x).all())
                    details.append(f"n={count} {'bit-identical' if same else 'ranks DIFFER'} "
                                   f"rel_err {rel:.3e}")
            ck.report(ok, name, "; ".join(details))
        except Exception as e:
            ck.report(False, name, f"{type(e).__name__}: {e}")


def check_compressed(ck, red, args, world, device, ctx):
    """float SUM/AVG of 1M+ elements: bit-identical, bounded error, compressed."""
    kind = METHOD_DEFAULTS[args.method]["dist"]
    i = 0
    for dtype in FLOATS:
        for op in ("sum", "avg"):
            i += 1
            tag = 300 + i
            count = args.n + 64 * i    # a fresh buffer for each call: no residual from another
            x = make_input(dist.get_rank(), tag, count, dtype, kind)
            exact = torch.zeros(count, dtype=torch.float64)
            for r in range(world):
                exact += make_input(r, tag, count, dtype, kind).double()
            if op == "avg":
                exact /= world
            before = ctx.stats()["calls_compressed"] if ctx is not None else None
            y = x.to(device)
            red(y, op)
            torch.cuda.synchronize()
            finite = bool(torch.isfinite(y).all())
            same = same_on_all_ranks(digest(y))
            rel = rel_error(y, exact)
            if ctx is not None:
                compressed = ctx.stats()["calls_compressed"] > before
                how = "calls_compressed grew" if compressed else "calls_compressed did NOT grow"
            else:
                compressed = rel >= args.min_rel
                how = (f"rel_err >= {args.min_rel:g}: not the dense result" if compressed
                       else f"rel_err < {args.min_rel:g}: looks dense")
            ok = finite and same and rel <= args.max_rel and (compressed or not args.expect_compressed)
            ck.report(ok, f"{DTYPE_NAMES[dtype]} {op.upper()} n={count}",
                      f"{'bit-identical' if same else 'ranks DIFFER'}, "
                      f"{'finite' if finite else 'NOT finite'}, rel_err {rel:.4f} "
                      f"(max {args.max_rel:g}), {how}")
    if red.mode == "hook":
        # Out of place (sendbuf) on a fresh key: the input is untouched and the output is as good
        # as in place.  (Bit-equality with the in-place call, made on another key, is only
        # reported: a method may draw its samples from the key, as the GPU top-k does.)
        count = args.n + 4096
        x = make_input(dist.get_rank(), 399, count, torch.float32, kind)
        exact = torch.zeros(count, dtype=torch.float64)
        for r in range(world):
            exact += make_input(r, 399, count, torch.float32, kind).double()
        x = x.to(device)
        keep = x.clone()
        a = x.clone()
        red(a, "sum")
        out = torch.empty_like(x)
        red(out, "sum", sendbuf=x.data_ptr())
        torch.cuda.synchronize()
        kept = torch.equal(x, keep)
        same = same_on_all_ranks(digest(out))
        rel = rel_error(out, exact)
        ok = kept and same and bool(torch.isfinite(out).all()) and rel <= args.max_rel
        ck.report(ok, "out-of-place allreduce_async (sendbuf)",
                  f"input {'untouched' if kept else 'MODIFIED'}, "
                  f"{'bit-identical' if same else 'ranks DIFFER'}, rel_err {rel:.4f} "
                  f"(in place: {rel_error(a, exact):.4f}; outputs "
                  f"{'equal' if torch.equal(a, out) else 'differ'})")


def check_convergence(ck, red, args, world, device):
    """EF convergence on heterogeneous least squares, with one NaN step in the middle."""
    n, R, steps, lr = args.conv_n, world, args.conv_steps, args.conv_lr
    rank = dist.get_rank()
    g0 = torch.Generator().manual_seed(4242)
    xstar = torch.randn(n, generator=g0)
    A, C, B = [], [], []
    for r in range(R):
        g = torch.Generator().manual_seed(9000 + r)
        a = torch.rand(n, generator=g) + 0.5
        c = torch.rand(n, generator=g) * 0.4 - 0.2
        b = a * xstar + c * torch.roll(xstar, 1) + args.conv_het * torch.randn(n, generator=g)
        A.append(a.to(device))
        C.append(c.to(device))
        B.append(b.to(device))

    def residual(r, x):
        return A[r] * x + C[r] * torch.roll(x, 1) - B[r]

    def grad(r, x, out):
        e = residual(r, x)
        torch.mul(A[r], e, out=out)
        out.add_(torch.roll(C[r] * e, -1)).mul_(2.0)
        return out

    def loss(x):
        return sum(residual(r, x).double().pow(2).mean().item() for r in range(R)) / R

    x = torch.zeros(n, device=device)
    x_ref = torch.zeros(n, device=device)
    g = torch.empty(n, device=device)     # one buffer every step: its error-feedback state lives
    g_ref = torch.empty(n, device=device)
    tmp = torch.empty(n, device=device)
    L0 = loss(x)
    nan_step = steps // 2
    poison = torch.arange(7, n, 9973, device=device)
    results = {}
    for step in range(steps):
        grad(rank, x, g)
        if step == nan_step and rank == R - 1:
            g[poison] = float("nan")
        red(g, "avg", key=0x5EED)
        # Dense reference, computed locally from every rank's data.
        g_ref.zero_()
        for r in range(R):
            g_ref.add_(grad(r, x_ref, tmp))
        g_ref.div_(R)
        if step == nan_step:
            torch.cuda.synchronize()
            nan_mask = torch.isnan(g)
            results["nan_poisoned"] = bool(nan_mask[poison].all())
            results["nan_count"] = int(nan_mask.sum().item())
            results["nan_mask_digest"] = digest(nan_mask)
            continue          # both runs skip the step, as an AMP grad scaler would
        if step == nan_step + 1:
            torch.cuda.synchronize()
            results["after_finite"] = bool(torch.isfinite(g).all())
            results["after_digest"] = digest(g)
        x.sub_(lr * g)
        x_ref.sub_(lr * g_ref)
    torch.cuda.synchronize()
    Lc, Ld = loss(x), loss(x_ref)
    ck.report(results["nan_poisoned"] and same_on_all_ranks(results["nan_mask_digest"]),
              f"NaN in rank {R - 1}'s gradient (step {nan_step}) gives NaN on every rank",
              f"{results['nan_count']} NaN elements of {n} on rank {rank} "
              f"({len(poison)} poisoned), same positions on every rank")
    ck.report(results["after_finite"] and same_on_all_ranks(results["after_digest"]),
              "the step after the NaN is finite and bit-identical on every rank")
    x_same = same_on_all_ranks(digest(x))
    ok = x_same and math.isfinite(Lc) and Lc <= Ld * (1 + args.conv_tol) and Lc < 0.9 * L0
    ck.report(ok, f"error feedback: least squares, {steps} SGD steps (lr {lr:g}), n={n}",
              f"loss {L0:.4f} -> {Lc:.6f} vs dense {Ld:.6f} ({(Lc / Ld - 1) * 100:+.2f}%, "
              f"max +{args.conv_tol * 100:g}%), x {'bit-identical' if x_same else 'DIFFERS'} "
              f"across ranks")


def check_ddp_hook(ck, args, world, device):
    """A small DDP model trained through squeeze.ddp's communication hook."""
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel as DDP
    import squeeze.ddp

    rank = dist.get_rank()
    din, dh, dout, batch, steps = 256, 1024, 256, 64, args.ddp_steps

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(din, dh), nn.GELU(), nn.Linear(dh, dh), nn.GELU(),
                             nn.Linear(dh, dout)).to(device)

    teacher = net(1)
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.no_grad():   # targets of unit variance: the loss starts near 1
        probe = torch.randn(1024, din, generator=torch.Generator().manual_seed(49_999))
        scale = 1.0 / teacher(probe.to(device)).std().item()

    def batch_for(step):
        g = torch.Generator().manual_seed(50_000 + 1000 * step + rank)
        xb = torch.randn(batch, din, generator=g).to(device)
        with torch.no_grad():
            return xb, teacher(xb) * scale

    def train(use_hook):
        model = DDP(net(2), device_ids=[device.index], bucket_cap_mb=1)
        state = squeeze.ddp.register(model) if use_hook else None
        opt = torch.optim.Adam(model.parameters(), lr=args.ddp_lr)
        losses = []
        for step in range(steps):
            xb, yb = batch_for(step)
            loss = nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return model, state, opt, losses

    _, _, _, dense_losses = train(False)
    model, state, opt, losses = train(True)
    torch.cuda.synchronize()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    same = same_on_all_ranks(digest(flat))
    s = state.stats()
    ok = (same and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
          and s["hook_calls"] > 0 and s["hook_fallbacks"] == 0)
    ck.report(ok, f"DDP with squeeze.ddp hook: {steps} Adam steps",
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f} (dense DDP {dense_losses[-1]:.4f}), "
              f"parameters {'bit-identical' if same else 'DIFFER'} across ranks, "
              f"hook_calls {s['hook_calls']}, fallbacks {s['hook_fallbacks']}")
    compressing = state.comm.eligible(flat.numel(), "float32", "avg")
    ck.report(s["calls_compressed"] > 0 or not compressing,
              "the hook's buckets are compressed",
              f"calls {s['calls']}, calls_compressed {s['calls_compressed']}, bytes_in "
              f"{s['bytes_in']}, bytes_wire {s['bytes_wire']}, rel_error {s['rel_error']:.4f}")
    lays = state.layouts()
    nparams = sum(1 for p in model.parameters() if p.numel() > 0)
    cover = sum(len(v) for v in lays.values())
    consistent = all(all(lay[i][0] + lay[i][1] * lay[i][2] <= lay[i + 1][0]
                         for i in range(len(lay) - 1)) for lay in lays.values())
    ck.report(len(lays) > 0 and consistent and cover >= nparams,
              "bucket layouts registered (one layer per parameter)",
              f"{len(lays)} bucket layouts, {cover} layers for {nparams} parameters")
    # After close() the hook falls back to PyTorch's default all-reduce.
    state.close()
    xb, yb = batch_for(steps)
    loss = nn.functional.mse_loss(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    same = same_on_all_ranks(digest(flat))
    ck.report(same and state.hook_fallbacks > 0,
              "after state.close() the hook falls back to the default all-reduce",
              f"fallbacks {state.hook_fallbacks}, parameters "
              f"{'bit-identical' if same else 'DIFFER'}")


def check_ef21_tracking(ck, red, world, device, comm):
    """SQZ_EF=ef21 on the GPU PowerSGD path: x_r(c) = A_r + c u v_r^T on a registered 512 x 384
    layer (plus 64 exact elements).  The first call is dense and sets the estimators; every later
    call changes the gradients by a rank-1 matrix, which a rank-r (r >= 1) update captures: the
    output is the exact sum to float rounding, although A_r is full rank."""
    rows, cols, extra = 512, 384, 64
    count = rows * cols + extra
    key = (1 << 41) + 5
    comm.register_layout(key, count, [(0, rows, cols)])
    u = torch.randn(rows, generator=torch.Generator().manual_seed(77), dtype=torch.float64)

    def x_for(r, c):
        g = torch.Generator().manual_seed(1000 + r)
        a = torch.randn(count, generator=g, dtype=torch.float64)
        v = torch.randn(cols, generator=g, dtype=torch.float64)
        a[:rows * cols] += c * torch.outer(u, v).reshape(-1)
        return a

    worst, same_all, first = 0.0, True, None
    for c in range(5):
        x = x_for(dist.get_rank(), c).float().to(device)
        exact = sum(x_for(r, c) for r in range(world))
        red(x, "sum", key=key)
        torch.cuda.synchronize()
        same_all = same_on_all_ranks(digest(x)) and same_all
        rel = rel_error(x, exact)
        if c == 0:
            first = rel
        else:
            worst = max(worst, rel)
    ok = same_all and worst < 1e-4 and first < 1e-5
    ck.report(ok, "ef21 powersgd: rank-1 changes of full-rank gradients delivered exactly",
              f"{'bit-identical' if same_all else 'ranks DIFFER'}, dense first call rel_err "
              f"{first:.2e}, largest later rel_err {worst:.2e} (max 1e-4)")


def check_alloc_failure(ck, red, world, device, ctx):
    """Rank 1 cannot allocate the device state of a new buffer (the GPU is nearly full there):
    the ranks agree on it before anything is sent, and the buffer goes dense on every rank, now
    and on its later calls.  Without the agreement rank 1 would send dense while rank 0 sends
    compressed (a hang or a wrong sum)."""
    rank = dist.get_rank()
    count = 4 << 20                           # 16 MB of float32: its residual alone is 16 MB
    key = (1 << 41) + 9
    xs = [make_input(rank, 500 + c, count, torch.float32, "smallint").to(device) for c in range(2)]
    exact = [sum(make_input(r, 500 + c, count, torch.float32, "smallint").double()
                 for r in range(world)) for c in range(2)]
    before = ctx.stats()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    hog, hogged = None, 0
    if rank == 1:
        for leave in (8, 10, 12):             # MB left: less than the buffer's state
            free, _ = torch.cuda.mem_get_info()
            try:
                hog = torch.empty(free - (leave << 20), dtype=torch.uint8, device=device)
                hogged = hog.numel()
                break
            except RuntimeError:
                hog = None
    red(xs[0], "sum", key=key)
    torch.cuda.synchronize()
    del hog
    torch.cuda.empty_cache()
    red(xs[1], "sum", key=key)                # the buffer stays dense, with memory free again
    torch.cuda.synchronize()
    after = ctx.stats()
    exact_ok = all(torch.equal(x.double().cpu(), e) for x, e in zip(xs, exact))
    fell = after["calls_fallback"] - before["calls_fallback"]
    same = same_on_all_ranks((digest(xs[0]), digest(xs[1])))
    made = same_on_all_ranks(1) and (rank != 1 or hogged > 0)
    ok = exact_ok and same and fell == 2 and after["calls_compressed"] == before["calls_compressed"]
    ck.report(ok and made, "a rank out of device memory for a new buffer: dense on every rank",
              f"rank 1 held all but 8-12 MB: {'yes' if made else 'NO'}; 2 calls "
              f"{'exact' if exact_ok else 'NOT exact'}, "
              f"{'bit-identical' if same else 'ranks DIFFER'}, calls_fallback +{fell} (want +2), "
              f"calls_compressed +{after['calls_compressed'] - before['calls_compressed']} "
              f"(want +0)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("preload", "hook"), required=True)
    ap.add_argument("--method", choices=sorted(METHOD_DEFAULTS),
                    default=(os.environ.get("SQZ_METHOD") if os.environ.get("SQZ_METHOD")
                             in METHOD_DEFAULTS else "quant"),
                    help="picks the error bound and the input distribution (default: SQZ_METHOD)")
    ap.add_argument("--n", type=int, default=1 << 20, help="elements of the large all-reduces")
    ap.add_argument("--max-rel", type=float, default=None,
                    help="bound on one compressed call's relative error (default: per method)")
    ap.add_argument("--min-rel", type=float, default=0.01,
                    help="preload mode: a relative error below this means the call went dense")
    ap.add_argument("--no-expect-compressed", dest="expect_compressed", action="store_false")
    ap.add_argument("--conv-n", type=int, default=1 << 20)
    ap.add_argument("--conv-steps", type=int, default=200)
    ap.add_argument("--conv-lr", type=float, default=0.005)
    ap.add_argument("--conv-het", type=float, default=1.0,
                    help="per-rank noise in b_r: how different the ranks' problems are")
    ap.add_argument("--conv-tol", type=float, default=None,
                    help="compressed loss may exceed the dense loss by this fraction (default: "
                         "per method)")
    ap.add_argument("--ddp-steps", type=int, default=30)
    ap.add_argument("--ddp-lr", type=float, default=1e-3)
    ap.add_argument("--skip", default="", help="comma-separated: exact,coalesced,compressed,"
                                               "convergence,ddp,alloc")
    ap.add_argument("--only", default="", help="comma-separated: run only these checks (ef21 "
                                               "runs only when named here)")
    args = ap.parse_args()
    if args.max_rel is None:
        args.max_rel = METHOD_DEFAULTS[args.method]["max_rel"]
    if args.conv_tol is None:
        args.conv_tol = METHOD_DEFAULTS[args.method]["conv_tol"]
    skip = set(filter(None, args.skip.split(",")))

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=300))
    rank, world = dist.get_rank(), dist.get_world_size()
    ck = Checker(rank, device)
    min_bytes = parse_size(os.environ.get("SQZ_MIN_BYTES", "64K"))

    ctx = comm = handle = None
    if args.mode == "hook":
        import squeeze
        import squeeze.ddp
        ctx = squeeze.Context(log_rank=rank)
        comm, handle = squeeze.ddp.create_nccl_comm(ctx)
        min_bytes = 1 << 62
        # The smallest float32 count the engine would compress, from the library's own policy.
        for count in (1000, 16384, 1 << 20):
            if comm.eligible(count, "float32", "sum"):
                min_bytes = 4 * count
                break
    if rank == 0:
        v = torch.cuda.nccl.version()
        nccl_version = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SQZ_"))
        print(f"nccl_torch_check: mode {args.mode}, {world} ranks, torch {torch.__version__}, "
              f"NCCL {nccl_version}, {env or '(no SQZ_*)'}"
              + (f", LD_PRELOAD={os.environ.get('LD_PRELOAD')}" if args.mode == "preload" else "")
              + (f", method {ctx.method}, {squeeze.library_path()}" if ctx else ""),
              flush=True)
    red = Reducer(args.mode, comm)
    steps = [
        ("exact", lambda: check_exact(ck, red, args, world, device, min_bytes)),
        ("coalesced", lambda: check_coalesced(ck, args, world, device)),
        ("compressed", lambda: check_compressed(ck, red, args, world, device, ctx)),
        ("convergence", lambda: check_convergence(ck, red, args, world, device)),
    ]
    if args.mode == "hook":
        steps.append(("ddp", lambda: check_ddp_hook(ck, args, world, device)))
        steps.append(("ef21", lambda: check_ef21_tracking(ck, red, world, device, comm)))
        steps.append(("alloc", lambda: check_alloc_failure(ck, red, world, device, ctx)))
    only = set(filter(None, args.only.split(",")))
    for name, fn in steps:
        if name in skip or (only and name not in only) or (name == "ef21" and not only):
            continue
        try:
            fn()
        except Exception as e:
            # One rank's exception would leave the others waiting in a collective: report it and
            # stop this rank; torchrun then ends the job with a nonzero status.
            traceback.print_exc()
            print(f"rank {rank}: FAIL {name}: {type(e).__name__}: {e}", flush=True)
            sys.stdout.flush()
            os._exit(1)
    if ctx is not None:
        torch.cuda.synchronize()
        s = ctx.stats()
        if rank == 0:
            print(f"rank 0 squeeze stats: calls {s['calls']}, compressed {s['calls_compressed']}, "
                  f"fallback {s['calls_fallback']}, nonfinite {s['calls_nonfinite']}, bytes "
                  f"{s['bytes_in']} -> {s['bytes_wire']}", flush=True)
        comm.close()
        squeeze.nccl.comm_destroy(handle)
        ctx.close()
    failures = torch.tensor([ck.failures], dtype=torch.int32, device=device)
    dist.all_reduce(failures, op=dist.ReduceOp.MAX)
    total = int(failures.item())
    if rank == 0:
        print(f"nccl_torch_check ({args.mode}, {args.method}): "
              f"{'FAILED: ' + str(total) + ' check(s)' if total else 'all checks passed'}",
              flush=True)
    dist.destroy_process_group()
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())

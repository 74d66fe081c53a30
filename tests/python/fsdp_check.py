"""squeeze.fsdp under mpirun (2 or 4 ranks), host memory over an mpi4py Comm.

Part 1 (any PyTorch): the FSDP2 reduce-scatter object called as FSDP calls it -- the exact
reduction when the calls pass through (SUM and AVG, float32 / float16 / bfloat16), 4-bit quant
with error feedback (each call inexact, the running sum of the outputs within one call's error of
the exact running sum: nothing lost), two modules' keys keeping their own residuals, every reason
for the fallback routed to it with the call's arguments, and a Comm whose ranks are not the
group's refused with an error on every rank; at 4 ranks a hierarchical Comm (2 emulated hosts)
reduce-scatters where the ranks are host-major and is refused on every rank where they are not
(only two of the four ranks' blocks differ there).

Part 2 (PyTorch with FSDP2, torch.distributed.fsdp.fully_shard): a 3-layer MLP sharded with
fully_shard over gloo trains 30 Adam steps with a reference reduce-scatter (gloo all-reduce, then the
rank's block) and with Squeeze: passing through (the host engine hands the calls to FSDP's
reduce-scatter), the losses are bit-identical to the reference at
2 ranks (equal within 1e-6 at 4); with 4-bit quant the final loss is within 5 % of the
reference's, every call went through Squeeze, and the trained model answers a probe batch the
same on every rank.  Prints PASS/FAIL/SKIP lines; exits 1 on any failure."""
import os
import sys
import warnings

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import squeeze  # noqa: E402
import squeeze.fsdp as sfsdp  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

world = MPI.COMM_WORLD
rank, W = world.Get_rank(), world.Get_size()
failures = 0


def report(ok, what):
    global failures
    ok = bool(world.allreduce(int(bool(ok)), op=MPI.MIN))
    if not ok:
        failures += 1
    if rank == 0:
        print(("PASS" if ok else "FAIL") + f": {what}", flush=True)


class Group:
    """What the reduce-scatter object reads of FSDP's process group: size() and rank()."""

    def __init__(self, size=W, r=None):
        self._size, self._rank = size, rank if r is None else r

    def size(self):
        return self._size

    def rank(self):
        return self._rank


def inputs(seed, n, integer=False):
    """Every rank's input (W x n), the same arrays on every rank: rank r uses row r."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-64, 64, (W, W * n)) if integer else rng.standard_normal((W, W * n))
    return x.astype(np.float32)


def comm_of(**params):
    ctx = squeeze.Context(env=False, **params)
    return ctx, ctx.mpi_comm(world)


def mpi_reduce_scatter(output_tensor, input_tensor, group, op, async_op=False):
    """A dense reduce-scatter over MPI (gloo has none in every PyTorch): FSDP's part here."""
    x = input_tensor.float().numpy()
    out = np.empty(output_tensor.numel(), np.float32)
    world.Reduce_scatter_block(x, out, op=MPI.SUM)
    if op == dist.ReduceOp.AVG:
        out /= W
    output_tensor.copy_(torch.from_numpy(out))


def check_passthrough():
    """Calls the policy passes through (min_bytes above them) run as the fallback, exact."""
    ctx, comm = comm_of(method="quant", quant_bits=4, min_bytes=1 << 40)
    rs = sfsdp.SqueezeReduceScatter(comm, sfsdp.module_key("layer"), fallback=mpi_reduce_scatter)
    n = 1000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            for op, div, name in ((dist.ReduceOp.SUM, 1, "SUM"), (dist.ReduceOp.AVG, W, "AVG")):
                x = inputs(1, n, integer=True)
                inp = torch.from_numpy(x[rank]).to(dt)
                out = rs.allocate((n,), dtype=dt, device=torch.device("cpu"))
                rs(output_tensor=out, input_tensor=inp, group=Group(), op=op)
                want = torch.from_numpy(x.sum(0)[rank * n:(rank + 1) * n] / div).to(dt)
                report(torch.equal(out, want), f"{W} ranks, passing through, {dt} {name}: the "
                                               "exact block of the reduction")
    report(rs.squeezed == 0 and rs.passed == 2 and sum(rs.fallbacks.values()) == 4 and
           len(caught) == 2 and all("host engine reduces float32" in str(w.message)
                                    for w in caught),
           "host float32 calls below min_bytes passed through silently, 16-bit host calls fell "
           "back with one warning per dtype")
    ctx.close()


def check_error_feedback():
    ctx, comm = comm_of(method="quant", quant_bits=4, warmup_steps=0, min_bytes=0)
    hooks = [sfsdp.SqueezeReduceScatter(comm, sfsdp.module_key(m)) for m in ("a", "b")]
    sizes = (4096, 1536)
    run_out = [np.zeros(n, np.float64) for n in sizes]
    run_in = [np.zeros(n, np.float64) for n in sizes]
    worst_call = 0.0
    steps = 12
    for s in range(steps):
        for h, n, ro, ri in zip(hooks, sizes, run_out, run_in):
            x = inputs(100 + s * 7 + n, n)
            out = h.allocate((n,), dtype=torch.float32, device=torch.device("cpu"))
            h(output_tensor=out, input_tensor=torch.from_numpy(x[rank].copy()), group=Group(),
              op=dist.ReduceOp.AVG)
            exact = x.sum(0)[rank * n:(rank + 1) * n].astype(np.float64) / W
            worst_call = max(worst_call, float(np.abs(out.numpy() - exact).max()))
            ro += out.numpy()
            ri += exact
    drift = max(float(np.abs(ro - ri).max()) for ro, ri in zip(run_out, run_in))
    st = ctx.stats()
    report(st["calls_compressed"] == 2 * steps and worst_call > 0,
           f"4-bit quant: {st['calls_compressed']} calls compressed, each inexact (worst element "
           f"error {worst_call:.3g})")
    report(drift <= 1.5 * worst_call,
           f"error feedback: the running sums of the outputs stay within {drift:.3g} of the exact "
           f"(one call's worst error {worst_call:.3g}) after {steps} calls on two keys")
    report(st["bytes_wire"] < 0.25 * st["bytes_in"],
           f"4-bit quant: {st['bytes_wire']} bytes on the wire for {st['bytes_in']} in")
    ctx.close()


def check_fallbacks():
    ctx, comm = comm_of(method="quant", quant_bits=4, warmup_steps=0, min_bytes=0)
    seen = []

    def fallback(output_tensor, input_tensor, group, op, async_op):
        seen.append((output_tensor, input_tensor, group, op, async_op))
        output_tensor.fill_(7)
        return "work"

    rs = sfsdp.SqueezeReduceScatter(comm, 5, fallback=fallback)
    n = 64
    f32 = torch.ones(W * n)
    cases = [
        ("op MAX", torch.empty(n), f32, dist.ReduceOp.MAX),
        ("float64", torch.empty(n, dtype=torch.float64), torch.ones(W * n, dtype=torch.float64),
         dist.ReduceOp.SUM),
        ("non-contiguous", torch.empty(n), torch.ones(2 * W * n)[::2], dist.ReduceOp.SUM),
        ("wrong size", torch.empty(n + 1), f32, dist.ReduceOp.SUM),
        ("dtypes differ", torch.empty(n, dtype=torch.bfloat16), f32, dist.ReduceOp.SUM),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for what, out, inp, op in cases:
            group = Group()
            got = rs(output_tensor=out, input_tensor=inp, group=group, op=op, async_op=True)
            last = seen[-1] if seen else None
            report(got == "work" and last is not None and last[0] is out and last[1] is inp and
                   last[2] is group and last[3] == op and last[4] is True and
                   bool((out == 7).all()),
                   f"fallback for {what}: FSDP's reduce-scatter called with the call's arguments")
        again = rs(output_tensor=torch.empty(n), input_tensor=f32, group=Group(),
                   op=dist.ReduceOp.MAX)
    report(again == "work" and len(caught) == len(cases),
           f"one warning per reason ({len(caught)} for {len(cases)} reasons, a repeated reason "
           "silent)")
    report(rs.squeezed == 0 and rs.calls == len(cases) + 1 and
           sum(rs.fallbacks.values()) == len(cases) + 1 and ctx.stats()["calls_compressed"] == 0,
           "no fallback call reached the Squeeze Comm")
    ctx.close()


def check_rank_mismatch():
    ctx, comm = comm_of(method="quant", quant_bits=4)
    rs = sfsdp.SqueezeReduceScatter(comm, 9)
    n = 16
    try:
        rs(output_tensor=torch.empty(n), input_tensor=torch.ones(W * n),
           group=Group(r=(rank + 1) % W), op=dist.ReduceOp.SUM)
        err = None
    except squeeze.SqueezeError as e:
        err = e
    report(err is not None and err.status == squeeze.SQZ_ERR_MISMATCH and "rank" in str(err) and
           rs.calls == 0, "a Comm whose ranks are not the group's: SqueezeError on every rank, "
                          "nothing sent")
    ctx.close()


def check_hierarchical():
    """A hierarchical Comm (hosts emulated with HOST_ID): ranks placed host-major reduce-scatter
    through it; hosts interleaved (its blocks host-major, not the group's order) are refused on
    every rank, although only some ranks' blocks differ."""
    if W != 4:
        return
    for interleaved in (False, True):
        ctx = squeeze.Context(env=False, method="quant", quant_bits=8, warmup_steps=0,
                              min_bytes=0, host_id=f"h{rank % 2 if interleaved else rank // 2}")
        comm = ctx.mpi_comm(world, hierarchical=True)
        rs = sfsdp.SqueezeReduceScatter(comm, 11)
        n = 2048
        x = inputs(77, n)
        out = torch.empty(n)
        try:
            rs(output_tensor=out, input_tensor=torch.from_numpy(x[rank].copy()), group=Group(),
               op=dist.ReduceOp.SUM)
            err = None
        except squeeze.SqueezeError as e:
            err = e
        if interleaved:
            report(err is not None and err.status == squeeze.SQZ_ERR_MISMATCH and rs.calls == 0,
                   f"hierarchical Comm, hosts interleaved (block {comm.block_rank} on rank "
                   f"{rank}): SqueezeError on every rank, nothing sent")
        else:
            exact = x.sum(0)[rank * n:(rank + 1) * n]
            rel = float(np.linalg.norm(out.numpy() - exact) / np.linalg.norm(exact))
            report(err is None and rs.squeezed == 1 and rel < 0.05,
                   f"hierarchical Comm, 2 hosts x 2 ranks host-major: the rank's block, 8-bit "
                   f"quant (relative error {rel:.4f})")
        ctx.close()


# ---- Part 2: FSDP2 ------------------------------------------------------------------------------


def reference_reduce_scatter(output_tensor, input_tensor, group, op, async_op=False):
    """gloo has no reduce-scatter in every version: all-reduce (SUM), then the rank's block."""
    assert op == dist.ReduceOp.SUM
    t = input_tensor.clone()
    dist.all_reduce(t, group=group)
    n = output_tensor.numel()
    output_tensor.copy_(t[group.rank() * n:(group.rank() + 1) * n])


class Reference(sfsdp.SqueezeReduceScatter):
    def __init__(self):
        super().__init__(None, 1, fallback=reference_reduce_scatter)

    def _why_not(self, *args):
        return "reference"


def train(make_hook, steps=30):
    """Losses of an MLP under fully_shard with the reduce-scatter make_hook(name) installs."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(),
                                torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    mesh = init_device_mesh("cpu", (W,))  # (FSDP's default mesh is on the GPU when there is one)
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    hooks = {}
    for name, m in model.named_modules():
        if hasattr(m, "set_custom_reduce_scatter"):
            m.set_force_sum_reduction_for_comms(True)  # (gloo has no AVG)
            hooks[name] = make_hook(name)
            m.set_custom_reduce_scatter(hooks[name])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(10 + rank)
    target = torch.from_numpy((np.random.default_rng(3).standard_normal((32, 8)) /
                               np.sqrt(32)).astype(np.float32))
    losses = []
    for _ in range(steps):
        x = torch.from_numpy(rng.standard_normal((16, 32)).astype(np.float32))
        loss = torch.nn.functional.mse_loss(model(x), x @ target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(world.allreduce(loss.item())) / W)
    with torch.no_grad():  # (the forward uses the parameters FSDP gathered from the shards)
        probe = model(torch.from_numpy(np.random.default_rng(4).standard_normal(
            (4, 32)).astype(np.float32))).numpy().ravel()
    return losses, hooks, probe


def check_fsdp2():
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard  # noqa: F401
    except Exception:  # (ImportError; Debian's torch 1.13 under Python 3.11: ValueError)
        if rank == 0:
            print(f"SKIP: FSDP2 (torch {torch.__version__} has no torch.distributed.fsdp."
                  "fully_shard)", flush=True)
        return
    port = None
    if rank == 0:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = world.bcast(port)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=W)
    ref, _, ref_probe = train(lambda name: Reference())
    ctx, comm = comm_of(method="quant", quant_bits=4, min_bytes=1 << 40)
    through, hooks, _ = train(lambda name: sfsdp.SqueezeReduceScatter(comm,
                                                                      sfsdp.module_key(name)))
    same = through == ref if W == 2 else np.allclose(through, ref, rtol=1e-6, atol=0)
    calls = sum(h.calls for h in hooks.values())  # (the root holds no parameter: no call)
    report(same, f"FSDP2, Squeeze passing through: losses "
                 f"{'bit-identical to' if W == 2 else 'within 1e-6 of'} the reference's (last "
                 f"{through[-1]:.6f})")
    report(calls > 0 and all(h.passed == h.calls and h.squeezed == 0 for h in hooks.values()),
           f"FSDP2, Squeeze passing through: all {calls} calls of {len(hooks)} FSDP modules "
           "handed to FSDP's reduce-scatter")
    ctx.close()
    ctx, comm = comm_of(method="quant", quant_bits=4, warmup_steps=0, min_bytes=0)
    q, hooks, probe = train(lambda name: sfsdp.SqueezeReduceScatter(comm,
                                                                     sfsdp.module_key(name)))
    st = ctx.stats()
    report(abs(q[-1] - ref[-1]) <= 0.05 * ref[-1] and q[-1] < 0.5 * q[0],
           f"FSDP2, 4-bit quant: final loss {q[-1]:.5f} against the reference's {ref[-1]:.5f} "
           f"(first {q[0]:.5f})")
    report(st["calls_compressed"] == sum(h.calls for h in hooks.values()) > 0 and
           all(not h.fallbacks for h in hooks.values()),
           f"FSDP2, 4-bit quant: all {st['calls_compressed']} reduce-scatters compressed, sent "
           f"{st['bytes_wire']} wire bytes for {st['bytes_in']}")
    gathered = world.allgather(probe)
    report(all(np.array_equal(gathered[0], g) for g in gathered) and
           not np.array_equal(probe, ref_probe),
           "FSDP2, 4-bit quant: the trained model's output on a probe batch is the same on every "
           "rank (and not the reference's)")
    ctx.close()
    dist.destroy_process_group()


check_passthrough()
check_error_feedback()
check_fallbacks()
check_rank_mismatch()
check_hierarchical()
check_fsdp2()
if rank == 0:
    print(("FAIL: %d check(s) failed" % failures) if failures else "PASS: squeeze.fsdp", flush=True)
sys.exit(1 if failures else 0)

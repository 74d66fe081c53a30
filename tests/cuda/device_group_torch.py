"""squeeze.DeviceGroup under PyTorch on one GPU (tests/cuda/test_device_group_torch.sh): W ranks as
threads, each with its own torch.cuda.Stream, all-reducing CUDA tensors through the binding.

Checks, for W = 2 and 4 and each method: every rank's result is the same bits; method none is
the exact sum; with error feedback the running average of the outputs of a constant gradient
gets closer to the true sum from 5 to 20 calls (what a training loop relies on); a
reduce-scatter gives each rank its block, directly and through squeeze.fsdp's FSDP2 hook.  Prints one line per case.
"""
import sys

import torch

import squeeze

N_ELEM = 1 << 16
failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def run_case(world, method, **params):
    torch.manual_seed(0)
    grads = [torch.randn(N_ELEM, device="cuda") for _ in range(world)]
    exact = torch.stack(grads).sum(0)
    with squeeze.DeviceGroup(world, method=method, min_bytes=0, **params) as g:
        streams = [torch.cuda.Stream() for _ in range(world)]
        outs = [torch.empty_like(exact) for _ in range(world)]
        total = [torch.zeros_like(exact) for _ in range(world)]
        errs = [[] for _ in range(world)]
        steps = 20

        def rank(r, comm):
            with torch.cuda.stream(streams[r]):
                for step in range(1, steps + 1):
                    outs[r].copy_(grads[r])
                    comm.allreduce_async(outs[r].data_ptr(), N_ELEM, "float32", key=1,
                                         stream_ptr=streams[r].cuda_stream)
                    total[r].add_(outs[r])
                    if step in (5, steps):
                        errs[r].append(((total[r] / step - exact).norm() / exact.norm()).item())
                streams[r].synchronize()

        g.run(rank)
        first = outs[0]
        for r in range(1, world):
            check(torch.equal(outs[r], first), f"W={world} {method}: rank {r} differs")
        e5, e20 = errs[0]
        print(f"W={world} {method} {params}: relative error of the average output after 5 calls "
              f"{e5:.4f}, after 20 {e20:.4f}")
        if method == "none":
            check(torch.allclose(first, exact, atol=1e-5), f"W={world} none: not the sum")
        else:
            # error feedback: what one call leaves out comes back later, so the average converges
            check(e20 < e5 or e20 < 1e-3, f"W={world} {method}: the average does not converge")
        # a reduce-scatter: rank r gets block r of the sum
        blk = N_ELEM // world
        rs = [torch.empty(blk, device="cuda") for _ in range(world)]

        def rank_rs(r, comm):
            with torch.cuda.stream(streams[r]):
                comm.reduce_scatter_async(rs[r].data_ptr(), blk, "float32", key=2,
                                          stream_ptr=streams[r].cuda_stream,
                                          sendbuf=grads[r].data_ptr())
                streams[r].synchronize()

        g.run(rank_rs)
        for r in range(world):
            want = exact[r * blk:(r + 1) * blk]
            e = ((rs[r] - want).norm() / want.norm()).item()
            bound = {"none": 1e-6, "quant": 0.05 if params.get("quant_bits") == 8 else 0.3}
            check(e < bound.get(method, 1.0), f"W={world} {method} rs: error {e:.3f}")
        check_fsdp_hook(g, world, method, params, grads, exact, streams)


class _Group:
    """What squeeze.fsdp reads of FSDP's process group."""

    def __init__(self, size, rank):
        self._size, self._rank = size, rank

    def size(self):
        return self._size

    def rank(self):
        return self._rank


def check_fsdp_hook(g, world, method, params, grads, exact, streams):
    """squeeze.fsdp's reduce-scatter called as FSDP2 calls it (AVG, inside the rank's stream,
    float32 and bfloat16): rank r's output is block r of the average; nothing falls back."""
    import squeeze.fsdp as sfsdp
    blk = N_ELEM // world
    for dt in (torch.float32, torch.bfloat16):
        hooks = [sfsdp.SqueezeReduceScatter(g.comms[r], sfsdp.module_key(f"layer.{dt}"),
                                            fallback=None) for r in range(world)]
        outs = [None] * world

        def rank_fsdp(r, comm):
            with torch.cuda.stream(streams[r]):
                inp = grads[r].to(dt)
                outs[r] = hooks[r].allocate((blk,), dtype=dt, device=inp.device)
                hooks[r](output_tensor=outs[r], input_tensor=inp, group=_Group(world, r),
                         op=torch.distributed.ReduceOp.AVG)
                streams[r].synchronize()

        g.run(rank_fsdp)
        for r in range(world):
            want = (exact[r * blk:(r + 1) * blk] / world).to(dt).float()
            e = ((outs[r].float() - want).norm() / want.norm()).item()
            bound = {"none": 1e-6 if dt == torch.float32 else 1e-2,
                     "quant": 0.05 if params.get("quant_bits") == 8 else 0.3}
            check(e < bound.get(method, 1.0) and hooks[r].squeezed == 1 and not hooks[r].fallbacks,
                  f"W={world} {method} fsdp hook {dt}: error {e:.3f}, squeezed "
                  f"{hooks[r].squeezed}, fallbacks {hooks[r].fallbacks}")


def main():
    if not squeeze.gpu_built() or not torch.cuda.is_available():
        print("SKIP: no GPU build or no CUDA device")
        return 77
    for world in (2, 4):
        run_case(world, "none")
        run_case(world, "quant", quant_bits=8)
        run_case(world, "quant", quant_bits=4)
        run_case(world, "sign")
        run_case(world, "topk", topk_density=0.05)
    print("FAIL" if failures else "PASS", f"({failures} failure(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

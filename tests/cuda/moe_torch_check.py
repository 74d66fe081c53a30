"""MoE token all-to-alls of Squeeze's NCCL interposer under torchrun (2 processes, 2 GPUs).

Run by tests/cuda/test_nccl_torch.sh with LD_PRELOAD=libsqueeze_nccl.so, SQZ_MOE_DIM=64 and
SQZ_MOE=dedup or lsh.  torch.distributed.all_to_all_single is what PyTorch builds from grouped
ncclSend/ncclRecv (uneven splits; equal splits may use ncclAlltoAll): both are intercepted.

The reference of every check is the same bytes sent as uint8 (not token traffic: it passes
through exactly), so it is the exact all-to-all of the same data.
  --codec dedup: float32, float16 and bfloat16 tokens with many identical rows, uneven splits
      (one of them 0 tokens) and equal splits: bit-exact.
  --codec lsh: clustered float32 tokens: every received row is its bucket's centroid, so it lies
      near the center its token was drawn from (noise 0.01; at least 95 % of the rows within 0.05,
      all within the spread of the centers); float16 tokens under lsh are de-duplicated (exact).
  both: passthrough exactness of int64 all-to-alls and of float ones whose counts are not a
      multiple of the token width.
Prints PASS/FAIL lines; exits 1 on any failure.  The stats (moe rows < tokens, passthroughs) are
checked by the shell script from SQZ_STATS.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist

WIDTH = int(os.environ.get("SQZ_MOE_DIM", "64"))


class Checker:
    def __init__(self, rank):
        self.rank = rank
        self.failures = 0

    def report(self, ok, name, detail=""):
        if not ok:
            self.failures += 1
        if self.rank == 0 or not ok:
            print("%s: rank %d %s %s" % ("PASS" if ok else "FAIL", self.rank, name, detail),
                  flush=True)


def raw(t):
    """The bytes of a 2-D tensor, one row per token."""
    return t.view(torch.uint8)


def exact_a2a(x, out_splits, in_splits):
    """The exact all-to-all of x's bytes (as uint8: not token traffic, it passes through)."""
    out = torch.empty((sum(out_splits), x.shape[1]), dtype=x.dtype, device=x.device)
    dist.all_to_all_single(raw(out), raw(x), out_splits, in_splits)
    return out


def coded_a2a(x, out_splits, in_splits, equal=False):
    out = torch.empty((sum(out_splits), x.shape[1]), dtype=x.dtype, device=x.device)
    if equal:
        dist.all_to_all_single(out, x)
    else:
        dist.all_to_all_single(out, x, out_splits, in_splits)
    return out


def splits(world, rank):
    """Tokens rank r sends to peer p: uneven, with rank 1 -> rank 0 empty."""
    def n(src, dst):
        return 0 if (src == 1 and dst == 0) else 40 * (src + 1) + 24 * dst + 8
    return [n(rank, p) for p in range(world)], [n(p, rank) for p in range(world)]


def dup_tokens(n, dtype, device, gen, distinct=7):
    base = torch.randn((distinct, WIDTH), generator=gen, device=device).to(dtype)
    pick = torch.randint(0, distinct, (n,), generator=gen, device=device)
    return base[pick].contiguous()


def check_dedup(ck, world, rank, device):
    gen = torch.Generator(device=device)
    gen.manual_seed(1000 + rank)
    send, recv = splits(world, rank)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = dup_tokens(sum(send), dtype, device, gen)
        ref = exact_a2a(x, recv, send)
        got = coded_a2a(x, recv, send)
        torch.cuda.synchronize()
        ck.report(torch.equal(raw(got), raw(ref)), "dedup uneven %s" % dtype,
                  "bit-exact")
        y = dup_tokens(64 * world, dtype, device, gen)
        ref = exact_a2a(y, [64] * world, [64] * world)
        got = coded_a2a(y, [64] * world, [64] * world, equal=True)
        torch.cuda.synchronize()
        ck.report(torch.equal(raw(got), raw(ref)), "dedup equal-split %s" % dtype,
                  "bit-exact")


def centers(device):
    gen = torch.Generator(device="cpu")
    gen.manual_seed(77)
    return (torch.randn((8, WIDTH), generator=gen) * 1.0 + 3.0).to(device)


def check_lsh(ck, world, rank, device):
    c = centers(device)
    send, recv = splits(world, rank)

    def tokens_of(src, n):
        gen = torch.Generator(device="cpu")
        gen.manual_seed(5000 + src)
        which = torch.randint(0, c.shape[0], (n,), generator=gen)
        noise = torch.randn((n, WIDTH), generator=gen) * 0.01
        return which.to(device), (c[which.to(device)] + noise.to(device)).contiguous()

    s_send, _ = splits(world, rank)
    which, x = tokens_of(rank, sum(s_send))
    got = coded_a2a(x, recv, send)
    # The centers of the tokens received: regenerate each sender's tokens and take our slice.
    want = []
    for p in range(world):
        p_send, _ = splits(world, p)
        w_p, _ = tokens_of(p, sum(p_send))
        off = sum(p_send[:rank])
        want.append(w_p[off:off + p_send[rank]])
    want = torch.cat(want)
    torch.cuda.synchronize()
    dev = (got - c[want]).abs().amax(dim=1)
    near = float((dev <= 0.05).float().mean()) if dev.numel() else 1.0
    spread = float((c[:, None, :] - c[None, :, :]).abs().amax())
    ck.report(near >= 0.95 and float(dev.max()) <= spread, "lsh rows near their centers",
              "%.1f %% within 0.05, max deviation %.4f (spread %.2f)" % (100 * near,
                                                                       float(dev.max()), spread))
    # Self block: exact.
    own = sum(send[:rank])
    rown = sum(recv[:rank])
    ck.report(torch.equal(got[rown:rown + recv[rank]], x[own:own + send[rank]]),
              "lsh self block exact")
    # fp16 under lsh: de-duplicated, exact.
    gen = torch.Generator(device=device)
    gen.manual_seed(2000 + rank)
    h = dup_tokens(sum(send), torch.float16, device, gen)
    ref = exact_a2a(h, recv, send)
    got = coded_a2a(h, recv, send)
    torch.cuda.synchronize()
    ck.report(torch.equal(raw(got), raw(ref)),
              "lsh-designated float16 call exact (de-duplicated)")


def check_passthrough(ck, world, rank, device):
    send, recv = splits(world, rank)
    gen = torch.Generator(device=device)
    gen.manual_seed(3000 + rank)
    # int64 tokens: not token traffic.
    a = torch.randint(-2**40, 2**40, (sum(send), WIDTH), generator=gen, device=device)
    out = torch.empty((sum(recv), WIDTH), dtype=torch.int64, device=device)
    dist.all_to_all_single(out, a, recv, send)
    ref = exact_a2a(a, recv, send)
    torch.cuda.synchronize()
    ck.report(torch.equal(out, ref), "int64 all-to-all passes through exactly")
    # float32 rows of WIDTH + 3 elements: counts not a multiple of the token width.
    f = torch.randn((sum(send), WIDTH + 3), generator=gen, device=device)
    ref = exact_a2a(f, recv, send)
    got = coded_a2a(f, recv, send)
    torch.cuda.synchronize()
    ck.report(torch.equal(raw(got), raw(ref)),
              "float all-to-all with counts not a multiple of SQZ_MOE_DIM passes through exactly")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", choices=("dedup", "lsh"), required=True)
    args = ap.parse_args()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)
    dist.init_process_group("nccl", device_id=device)
    world, rank = dist.get_world_size(), dist.get_rank()
    ck = Checker(rank)
    if args.codec == "dedup":
        check_dedup(ck, world, rank, device)
    else:
        check_lsh(ck, world, rank, device)
    check_passthrough(ck, world, rank, device)
    dist.barrier()
    dist.destroy_process_group()
    print("moe_torch_check rank %d: %d failure(s)" % (rank, ck.failures), flush=True)
    sys.exit(1 if ck.failures else 0)


if __name__ == "__main__":
    main()

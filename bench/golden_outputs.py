#!/usr/bin/env python3
"""The host engine's outputs as hashes, to record before a refactor and compare after it:

    /usr/bin/python3 bench/golden_outputs.py > before.txt    # (on the old build)
    /usr/bin/python3 bench/golden_outputs.py > after.txt && diff before.txt after.txt

A 3-rank squeeze.LocalGroup runs 5 all-reduces of 70001 floats (a NaN on one rank at call 3)
for each method and setting below and prints the sha256 of every rank's outputs, then one hash of
all.  SQUEEZE_LIB selects the library (default: the build tree's).  The same bits before and after
is what "nothing changes for users who did not ask" means for a refactor of the host path."""
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import squeeze  # noqa: E402
cases = [
    ("topk", dict(topk_density="0.01")),
    ("topk", dict(topk_density="0.05", topk_select="sampled")),
    ("topk", dict(topk_density="0.2", topk_select="sampled", ef="ef14")),
    ("topk", dict(topk_density="0.001", topk_warmup_steps="3")),
    ("quant", dict(quant_bits="4")),
    ("quant", dict(quant_bits="3", quant_bucket="100")),
    ("quant", dict(quant_bits="5", quant_bucket="512", quant_rounding="stochastic")),
    ("quant", dict(quant_bits="4", quant_bucket="77", ef="none")),
    ("fedzip", dict(fedzip_clusters="5")),
    ("sign", dict()),
    ("powersgd", dict(powersgd_rank="4")),
    ("powersgd", dict(powersgd_rank="2", ef="ef14", powersgd_start_steps="0")),
    ("powersgd", dict(powersgd_rank="3", ef="ef21", powersgd_iters="2", powersgd_start_steps="1")),
    ("fedzip", dict()),
]
W, N, STEPS = 3, 70001, 5
out = hashlib.sha256()
for method, kv in cases:
    params = dict(method=method, min_bytes="0", warmup_steps="1", **kv)
    with squeeze.LocalGroup(W, **params) as g:
        rng = np.random.default_rng(7)
        data = [[(rng.standard_normal(N) * (1 + (np.arange(N) % 97 == 0) * 50)).astype(np.float32)
                 for _ in range(W)] for _ in range(STEPS)]
        data[3][1][12345] = np.nan
        res = [[None] * W for _ in range(STEPS)]
        def body(rank, comm):
            for s in range(STEPS):
                buf = data[s][rank].copy()
                comm.allreduce(buf.ctypes.data, N, "float32", key=5)
                res[s][rank] = buf
        g.run(body)
    h = hashlib.sha256(b"".join(r.tobytes() for row in res for r in row)).hexdigest()[:16]
    print(method, kv, h)
    out.update(h.encode())
print("ALL", out.hexdigest()[:16])

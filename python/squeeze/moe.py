"""LSH-MoE token exchanges (include/squeeze.h: sqz_moe_*) on numpy arrays, and PyTorch autograd
functions built on them.

numpy level (host memory, float32, C-contiguous (tokens, dim) arrays; `comm` a squeeze Comm, e.g.
Context.mpi_comm(mpi4py_comm)):

    h = squeeze.moe.dispatch(comm, x, send_counts, codec="lsh")  # x grouped by destination rank
    y = h.combine(expert(h.received))            # Y = E(c) + (x - c)
    g_e, g_res = h.combine_backward(g_y)         # per-centroid mean of dL/dY, to the experts
    g_x = h.dispatch_backward(g_in) + g_res      # dL/dx
    h.close()

send_counts[r] tokens of x (rows in rank order) go to rank r; the receive counts are exchanged
with one small mpi4py all-to-all (Comm.mpi).  codec "lsh" sends one centroid per LSH bucket,
"exact" (or "dedup") the tokens as they are: the same calls are then a plain MoE's.

PyTorch level (torch is imported by the functions that need it only):

    y = squeeze.moe.moe_layer(comm, x, send_counts, expert, codec="lsh")

runs dispatch -> expert -> combine with autograd: Dispatch and Combine are torch.autograd.Function
subclasses whose backward passes are sqz_moe_dispatch_backward and sqz_moe_combine_backward, and
the expert runs between them under ordinary autograd, so its parameters get their gradients (exact
for the LSH forward pass: see include/squeeze.h).  Tensors travel through host memory: CUDA
tensors are copied to the host for the exchange and back (correct, not fast).
"""
import ctypes

import numpy as np

from . import _lib
from ._lib import SqueezeError, check

_CODECS = {"exact": _lib.SQZ_MOE_EXACT, "dedup": _lib.SQZ_MOE_DEDUP, "lsh": _lib.SQZ_MOE_LSH}


def codec_code(codec):
    """SQZ_MOE_* for a name ("exact", "dedup", "lsh") or an int code."""
    if isinstance(codec, int) and codec in _CODECS.values():
        return codec
    try:
        return _CODECS[str(codec).lower()]
    except KeyError:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                           f"MoE codec {codec!r} is not exact, dedup or lsh") from None


def _f32(a, shape=None):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and a.shape != shape:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, f"expected shape {shape}, got {a.shape}")
    return a


def _sizes(values):
    return (ctypes.c_size_t * max(1, len(values)))(*[int(v) for v in values])


def _layout(counts):
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return [int(c) for c in counts], [int(d) for d in displs]


class Handle:
    """A dispatch's state (sqz_moe_handle_t): `received` (the experts' input rows, laid out by
    source rank), `send_counts`, `recv_counts`, and the calls that need the handle."""

    def __init__(self, comm, x, send_counts, codec):
        self._comm = comm
        self._lib = comm._lib
        L = self._lib
        x = _f32(x)
        if x.ndim != 2:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "x must be (tokens, dim)")
        self.dim = x.shape[1]
        P = comm.mpi.Get_size()
        send_counts = [int(c) for c in send_counts]
        if len(send_counts) != P or sum(send_counts) != x.shape[0] or min(send_counts) < 0:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                               f"send_counts must be {P} non-negative counts summing to "
                               f"{x.shape[0]}")
        recv_counts = [int(c) for c in comm.mpi.alltoall(send_counts)]
        self.send_counts, sd = _layout(send_counts)
        self.recv_counts, rd = _layout(recv_counts)
        self._arrays = [_sizes(self.send_counts), _sizes(sd), _sizes(self.recv_counts), _sizes(rd)]
        self.received = np.empty((sum(recv_counts), self.dim), np.float32)
        h = ctypes.c_void_p()
        sc, sdp, rc, rdp = self._arrays
        check(L.fn("sqz_moe_dispatch")(comm._handle(), codec_code(codec), x.ctypes.data, sc, sdp,
                                       self.received.ctypes.data, rc, rdp, self.dim,
                                       ctypes.byref(h)), "sqz_moe_dispatch")
        self._ptr = h.value
        self.ntok = x.shape[0]

    def _h(self):
        if not self._ptr:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "the MoE handle is closed")
        return self._ptr

    def tokens(self):
        """(tokens sent to other ranks, rows sent for them): rows / tokens is the compression
        rate of the dispatch."""
        rows = ctypes.c_size_t()
        n = self._lib.fn("sqz_moe_handle_tokens")(self._h(), ctypes.byref(rows))
        return int(n), int(rows.value)

    def combine(self, expert_out):
        """Y = E(c) + (x - c), laid out as x."""
        e = _f32(expert_out, self.received.shape)
        out = np.empty((self.ntok, self.dim), np.float32)
        check(self._lib.fn("sqz_moe_combine")(self._comm._handle(), self._h(), e.ctypes.data,
                                              out.ctypes.data), "sqz_moe_combine")
        return out

    def combine_backward(self, grad_y):
        """(dL/d expert_out (the per-centroid mean of grad_y on each copy), dL/dx through the
        residual)."""
        g = _f32(grad_y, (self.ntok, self.dim))
        ge = np.empty_like(self.received)
        gx = np.empty((self.ntok, self.dim), np.float32)
        check(self._lib.fn("sqz_moe_combine_backward")(self._comm._handle(), self._h(),
                                                       g.ctypes.data, ge.ctypes.data,
                                                       gx.ctypes.data),
              "sqz_moe_combine_backward")
        return ge, gx

    def dispatch_backward(self, grad_in):
        """dL/dx through the centroids, given dL/d(expert input) laid out as `received`."""
        g = _f32(grad_in, self.received.shape)
        gx = np.empty((self.ntok, self.dim), np.float32)
        check(self._lib.fn("sqz_moe_dispatch_backward")(self._comm._handle(), self._h(),
                                                        g.ctypes.data, gx.ctypes.data),
              "sqz_moe_dispatch_backward")
        return gx

    def centroid_mean(self, g):
        """Each token's row replaced by the mean over the tokens of its centroid."""
        g = _f32(g, (self.ntok, self.dim))
        out = np.empty_like(g)
        check(self._lib.fn("sqz_moe_centroid_mean")(self._h(), g.ctypes.data, out.ctypes.data),
              "sqz_moe_centroid_mean")
        return out

    def close(self):
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._lib.fn("sqz_moe_handle_free")(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def dispatch(comm, x, send_counts, codec="lsh"):
    """sqz_moe_dispatch of the (tokens, dim) float32 array x: send_counts[r] rows (in rank order)
    to rank r.  Collective over comm (a Comm from Context.mpi_comm).  Returns a Handle."""
    if getattr(comm, "mpi", None) is None:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                           "squeeze.moe needs a Comm made by Context.mpi_comm()")
    return Handle(comm, x, send_counts, codec)


def alltoallv(comm, x, send_counts, codec="exact"):
    """sqz_moe_alltoallv of float32 rows (no handle): returns (received rows, recv_counts)."""
    x = _f32(x)
    P = comm.mpi.Get_size()
    sc, sd = _layout([int(c) for c in send_counts])
    rc, rd = _layout([int(c) for c in comm.mpi.alltoall(sc)])
    out = np.empty((sum(rc), x.shape[1]), np.float32)
    if len(sc) != P or sum(sc) != x.shape[0]:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "send_counts do not match x")
    check(comm._lib.fn("sqz_moe_alltoallv")(comm._handle(), codec_code(codec), x.ctypes.data,
                                            _sizes(sc), _sizes(sd), out.ctypes.data, _sizes(rc),
                                            _sizes(rd), x.shape[1], _lib.SQZ_DTYPE_FLOAT32),
          "sqz_moe_alltoallv")
    return out, rc


# -------------------------------------------------------------------------------------------------
# PyTorch
# -------------------------------------------------------------------------------------------------
def _np(t):
    return t.detach().to("cpu", dtype=__import__("torch").float32).contiguous().numpy()


def _functions():
    """Dispatch and Combine (torch.autograd.Function), made on first use (torch imported here)."""
    global _FUNCS
    if _FUNCS is not None:
        return _FUNCS
    import torch

    class Dispatch(torch.autograd.Function):
        """x (tokens, dim) -> the experts' input rows; state in box[0] (a Handle)."""

        @staticmethod
        def forward(ctx, x, comm, send_counts, codec, box):
            h = dispatch(comm, _np(x), send_counts, codec)
            box.append(h)
            ctx.h, ctx.device, ctx.dtype = h, x.device, x.dtype
            return torch.from_numpy(h.received.copy()).to(x.device, x.dtype)

        @staticmethod
        def backward(ctx, grad_in):
            gx = ctx.h.dispatch_backward(_np(grad_in))
            return torch.from_numpy(gx).to(ctx.device, ctx.dtype), None, None, None, None

    class Combine(torch.autograd.Function):
        """(expert outputs, x) -> Y = E(c) + (x - c); x only carries the residual's gradient."""

        @staticmethod
        def forward(ctx, expert_out, x, h):
            ctx.h, ctx.device, ctx.dtype = h, x.device, x.dtype
            return torch.from_numpy(h.combine(_np(expert_out))).to(x.device, x.dtype)

        @staticmethod
        def backward(ctx, grad_y):
            ge, gx = ctx.h.combine_backward(_np(grad_y))
            return (torch.from_numpy(ge).to(ctx.device, ctx.dtype),
                    torch.from_numpy(gx).to(ctx.device, ctx.dtype), None)

    _FUNCS = (Dispatch, Combine)
    return _FUNCS


_FUNCS = None


def moe_layer(comm, x, send_counts, expert, codec="lsh", stats=None):
    """Y = combine(expert(dispatch(x))) with autograd: x (tokens, dim) grouped by destination
    rank, send_counts[r] rows to rank r, expert a callable on (rows, dim) tensors (this rank's
    expert).  Collective over comm.  The handle lives as long as the graph (freed with it).
    When `stats` is a dict, stats["tokens"] / stats["centroids"] receive the dispatch's counts."""
    Dispatch, Combine = _functions()
    box = []
    rows = Dispatch.apply(x, comm, list(send_counts), codec, box)
    if stats is not None:
        stats["tokens"], stats["centroids"] = box[0].tokens()
    return Combine.apply(expert(rows), x, box[0])

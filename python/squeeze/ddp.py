"""PyTorch DistributedDataParallel communication hook: compressed gradient all-reduce on the GPU.

    import squeeze.ddp
    model = DDP(net, device_ids=[local_rank])
    state = squeeze.ddp.register(model, method="quant", quant_bits=4)
    ... train ...
    print(state.stats()); state.close()

The hook all-reduces each DDP bucket in place with sqz_allreduce_async on the current CUDA stream
(the stream DDP waits on), over a dedicated NCCL communicator that SqueezeHookState creates
beside the process group's.  Each bucket is named by a key hashed from the indices of its
parameters in the model (the same on every rank and at every step, unlike its address), and its
layout (one layer per parameter: offset, rows = shape[0], cols = the rest) is registered once, so
that per-layer methods see the parameters inside the flat buffer.  Buckets that are not on the
GPU or not float32 / float16 / bfloat16 take PyTorch's default all-reduce hook.

torch is imported only here, and only when a state is made or the hook runs.
"""
import struct
import threading

from . import _lib
from . import nccl as _nccl
from ._core import Context, gpu_built
from ._lib import SqueezeError

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xcbf29ce484222325
_FNV_PRIME = 0x100000001b3


def fnv1a64(data, h=_FNV_OFFSET):
    """64-bit FNV-1a of bytes (continuing from h)."""
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


def bucket_key(indices):
    """The key of a bucket holding the model parameters of these indices, in this order: FNV-1a
    over their little-endian int64 values, never 0 (0 asks the library to derive a key from the
    address)."""
    h = fnv1a64(struct.pack("<%dq" % len(indices), *indices))
    return h or 1


def param_layers(shapes, ids=None):
    """[(offset, rows, cols, id)] for parameters of these shapes laid out back to back: rows =
    shape[0] (numel for 0-D and 1-D tensors), cols = numel // rows, id = ids[i] (0 when ids is
    None: unknown).  Empty parameters take no layer (the library wants rows, cols >= 1).
    Returns (layers, total elements)."""
    layers = []
    off = 0
    for i, shape in enumerate(shapes):
        shape = tuple(int(s) for s in shape)
        numel = 1
        for s in shape:
            numel *= s
        if numel > 0:
            rows = shape[0] if len(shape) >= 2 else numel
            layers.append((off, rows, numel // rows, int(ids[i]) if ids is not None else 0))
        off += numel
    return layers, off


_TORCH_DTYPES = None


def _torch_dtypes():
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        import torch
        _TORCH_DTYPES = {
            torch.float32: _lib.SQZ_DTYPE_FLOAT32,
            torch.float16: _lib.SQZ_DTYPE_FLOAT16,
            torch.bfloat16: _lib.SQZ_DTYPE_BFLOAT16,
        }
    return _TORCH_DTYPES


def _global_rank(group, group_rank):
    import torch.distributed as dist
    if group is None or group is dist.group.WORLD:
        return group_rank
    get = getattr(dist, "get_global_rank", None) or dist.distributed_c10d._get_global_rank
    return get(group, group_rank)


def create_nccl_comm(ctx, process_group=None, device=None):
    """A Squeeze Comm over a new NCCL communicator spanning `process_group` (default: the world).
    Collective over the group: rank 0 makes the NCCL unique id, torch.distributed broadcasts it,
    every rank joins on `device` (default: the current CUDA device).  Returns (comm, handle);
    close the comm, then squeeze.nccl.comm_destroy(handle)."""
    import torch
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if not gpu_built():
        # Same answer on every rank (same library), before any collective: nobody hangs.
        raise SqueezeError(_lib.SQZ_ERR_NOT_SUPPORTED,
                           f"{_lib.load().path} was built without CUDA/NCCL support")
    # Rank 0's failure travels with the broadcast, so that the other ranks raise too instead of
    # waiting in ncclCommInitRank.
    payload = [None]
    if rank == 0:
        try:
            payload[0] = ("ok", _nccl.get_unique_id())
        except SqueezeError as e:
            payload[0] = ("error", e.status, str(e))
    dist.broadcast_object_list(payload, src=_global_rank(process_group, 0), group=process_group,
                               device=device)
    if payload[0][0] != "ok":
        raise SqueezeError(payload[0][1], f"rank 0 could not make an NCCL unique id: "
                                          f"{payload[0][2]}")
    uid = payload[0][1]
    with torch.cuda.device(device):
        handle = _nccl.comm_init(world, uid, rank)
        try:
            comm = ctx.nccl_comm(handle)
        except BaseException:
            _nccl.comm_destroy(handle)
            raise
    return comm, handle


class SqueezeHookState:
    """State of squeeze_hook: a Context made from **params (and the SQZ_* environment when
    env=True), a Comm over a dedicated NCCL communicator of `process_group` (collective: every
    rank of the group makes its state at the same point), and the parameter -> index map of
    `model` (a DDP module or the module it wraps) that bucket keys are made from.

    Make it after torch.cuda.set_device() (the communicator lives on the current device)."""

    def __init__(self, model, process_group=None, env=True, **params):
        import torch
        import torch.distributed as dist

        self.process_group = process_group
        group = process_group if process_group is not None else dist.group.WORLD
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.device = torch.device("cuda", torch.cuda.current_device())
        self._lock = threading.Lock()
        self.ctx = Context(env=env, log_rank=self.rank, **params)
        self.comm = None
        self.nccl_handle = None
        try:
            self.comm, self.nccl_handle = create_nccl_comm(self.ctx, process_group, self.device)
        except BaseException:
            self.ctx.close()
            raise
        self._model = model
        self._index_params()
        self._bucket_cache = {}  # tuple of id(param) -> (key, layers or None, count)
        self._layouts = {}       # key -> (count, layers) registered with the library
        self._warned = set()
        self.hook_calls = 0
        self.hook_fallbacks = 0

    def _index_params(self):
        ps = list(self._model.parameters())
        self._index_by_id = {id(p): i for i, p in enumerate(ps)}
        self._index_by_ptr = {}
        for i, p in enumerate(ps):
            self._index_by_ptr.setdefault((p.data_ptr(), tuple(p.shape)), i)
        self._params_alive = ps  # keeps the ids above meaningful

    def _indices(self, params):
        idx = []
        for p in params:
            i = self._index_by_id.get(id(p))
            if i is None:
                i = self._index_by_ptr.get((p.data_ptr(), tuple(p.shape)))
            if i is None:
                return None
            idx.append(i)
        return idx

    def _warn_once(self, what, msg):
        if what not in self._warned:
            self._warned.add(what)
            import warnings
            warnings.warn(f"squeeze.ddp (rank {self.rank}): {msg}", RuntimeWarning, stacklevel=3)

    def _bucket_info(self, bucket, count):
        """(key, layers or None) of a bucket, cached by the identity of its parameters."""
        params = bucket.parameters()
        ident = (tuple(id(p) for p in params), count)
        hit = self._bucket_cache.get(ident)
        if hit is not None:
            return hit
        idx = self._indices(params)
        if idx is None:
            self._index_params()  # parameters replaced since the state was made?
            idx = self._indices(params)
        if idx is None:
            # Not parameters of the model we know: a key from the shapes and the bucket index is
            # still the same on every rank, but not stable across bucket rebuilds.
            self._warn_once("unknown-params", "bucket parameters not found in the model; keys "
                                              "fall back to the bucket index and shapes")
            shapes = [tuple(int(s) for s in p.shape) for p in params]
            key = fnv1a64(repr((bucket.index(), shapes)).encode()) or 1
        else:
            key = bucket_key(idx)
        # Layer ids are the parameters' indices in the model + 1: the residuals of a parameter
        # follow it into whichever bucket holds it after DDP's rebuild.
        layers, total = param_layers([p.shape for p in params],
                                     [i + 1 for i in idx] if idx is not None else None)
        if total != count:
            self._warn_once(("layout", count), f"bucket of {count} elements holds parameters of "
                                               f"{total} elements: no layout registered")
            layers = None
        info = (key, layers)
        self._bucket_cache[ident] = info
        return info

    def _ensure_layout(self, key, count, layers):
        have = self._layouts.get(key)
        if have is not None and have[0] == count:
            return
        if not self.comm.context._lib.has("sqz_layout_register"):
            return
        self.comm.register_layout(key, count, layers)
        self._layouts[key] = (count, layers)

    def _fallback(self, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        self.hook_fallbacks += 1
        return default_hooks.allreduce_hook(self.process_group, bucket)

    def stats(self):
        """The context's stats (squeeze.Context.stats) plus hook_calls and hook_fallbacks
        (buckets sent through PyTorch's default all-reduce)."""
        d = self.ctx.stats() if not self.ctx.closed else {}
        d["hook_calls"] = self.hook_calls
        d["hook_fallbacks"] = self.hook_fallbacks
        return d

    def layouts(self):
        """{key: [(offset, rows, cols), ...]} of the buckets registered so far, as the library
        holds them."""
        out = {}
        for key, (count, layers) in self._layouts.items():
            if self.comm is not None and self.comm.context._lib.has("sqz_layout_get"):
                out[key] = self.comm.layout(key, count)
            else:
                out[key] = list(layers)
        return out

    def adapt(self):
        """Under SQZ_ADAPT=lgreco: the latest per-layer choice for each buffer size (a list of
        dicts with count, solves, budget, error, bytes, bytes_uniform, levels), else []."""
        return self.ctx.stats_json(self.rank).get("adapt", []) if not self.ctx.closed else []

    def state_dict(self):
        """The hook's error-feedback state on this rank (the Comm's residuals, estimators and
        counters, synchronized with the device first): save it with the model and optimizer, at
        the same step on every rank, and hand it to load_state_dict() in the restarted job, after
        registering the hook again, to continue as the uninterrupted job would have."""
        import torch
        if self.comm is None:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "the hook state is closed")
        torch.cuda.synchronize(self.device)
        return {"format": "squeeze-ddp-hook-state", "version": 1,
                "comm": self.comm.state_dict(), "hook_calls": self.hook_calls}

    def load_state_dict(self, state):
        """Restores state_dict()'s result (same method, settings, rank and world size)."""
        import torch
        if not isinstance(state, dict) or state.get("format") != "squeeze-ddp-hook-state":
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "not a squeeze DDP hook state_dict")
        if self.comm is None:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "the hook state is closed")
        torch.cuda.synchronize(self.device)
        self.comm.load_state_dict(state["comm"])
        self.hook_calls = int(state.get("hook_calls", 0))

    def write_stats_json(self, path):
        """The library's stats JSON for this rank ("%r" in path is the rank)."""
        self.ctx.write_stats_json(path, self.rank)

    def close(self):
        """Waits for the device, destroys the Comm, the NCCL communicator and the Context.  The
        hook falls back to the default all-reduce afterwards.  Idempotent."""
        with self._lock:
            if self.comm is None and self.nccl_handle is None and self.ctx.closed:
                return
            import torch
            try:
                torch.cuda.synchronize(self.device)
            finally:
                comm, self.comm = self.comm, None
                handle, self.nccl_handle = self.nccl_handle, None
                if comm is not None:
                    comm.close()
                if handle:
                    _nccl.comm_destroy(handle)
                self.ctx.close()


def squeeze_hook(state, bucket):
    """The DDP communication hook (register with model.register_comm_hook(state, squeeze_hook)).
    Averages the bucket in place (SQZ_OP_AVG, as DDP's default hook) and returns a future already
    completed with it: the work is ordered on the current CUDA stream."""
    import torch

    t = bucket.buffer()
    dtype = _torch_dtypes().get(t.dtype)
    comm = state.comm
    if (comm is None or dtype is None or not t.is_cuda or t.device != state.device
            or not t.is_contiguous()):
        return state._fallback(bucket)
    count = t.numel()
    key, layers = state._bucket_info(bucket, count)
    if layers:
        state._ensure_layout(key, count, layers)
    stream = torch.cuda.current_stream(t.device)
    comm.allreduce_async(t.data_ptr(), count, dtype, _lib.SQZ_OP_AVG, key, stream.cuda_stream)
    state.hook_calls += 1
    # devices=[...]: completing the future records an event on the current stream, and whoever
    # waits on it (DDP's reducer) waits for that event on its own stream.
    fut = torch.futures.Future(devices=[t.device])
    fut.set_result(t)
    return fut


def register(model_ddp, process_group=None, env=True, **params):
    """Makes a SqueezeHookState for a DDP model (over its process group unless one is given) and
    registers squeeze_hook on it.  Returns the state (stats(), layouts(), close())."""
    if process_group is None:
        process_group = getattr(model_ddp, "process_group", None)
    state = SqueezeHookState(model_ddp, process_group=process_group, env=env, **params)
    model_ddp.register_comm_hook(state, squeeze_hook)
    return state

"""PyTorch FSDP2 (fully_shard) custom reduce-scatter: compressed gradient reduce-scatter.

    from torch.distributed.fsdp import fully_shard
    import squeeze, squeeze.fsdp
    for block in model.blocks: fully_shard(block)
    fully_shard(model)
    ctx = squeeze.Context(method="quant", quant_bits=4)
    comm, handle = squeeze.ddp.create_nccl_comm(ctx)          # GPU: a dedicated NCCL comm
    # comm = ctx.mpi_comm(MPI.COMM_WORLD)                     # CPU: an MPI comm (mpi4py)
    hooks = squeeze.fsdp.register(model, comm)
    ... train ...; print(ctx.stats())

FSDP2 calls the object that FSDPModule.set_custom_reduce_scatter() installs as
`comm(output_tensor=, input_tensor=, group=, op=)`, synchronously, inside its reduce-scatter
stream; the input is the module's padded flat gradient (world size x shard), the output the
shard.  SqueezeReduceScatter reduce-scatters it through a Squeeze Comm: on device memory with
sqz_reduce_scatter_async on the current CUDA stream (FSDP's reduce-scatter stream, which FSDP
orders against its compute; calls the policy passes through run as Squeeze's dense
ncclReduceScatter), on host memory (float32) with sqz_reduce_scatter_block (calls the policy
passes through run as `fallback`, on every rank alike).  Each FSDP module's
calls carry a key hashed from its name in the model (the same on every rank and every step), so
its error-feedback residual follows it.  What Squeeze does not reduce -- an op other than SUM and
AVG (FSDP's PreMulSum for a custom gradient divide factor), a dtype other than float32 / float16 /
bfloat16, memory of the other kind than the Comm's, non-contiguous tensors, a size that is not
world size x shard -- takes `fallback` (by default FSDP's own: dist.reduce_scatter_tensor), with
a warning naming the reason once.

The Comm must span the process group's ranks in the group's order (squeeze.ddp.create_nccl_comm
makes one so; an MPI communicator's ranks must equal the group's).  Under HSDP (a 2-D mesh) FSDP
reduce-scatters over the mesh's shard dimension: make the Comm over that group
(`create_nccl_comm(ctx, mesh.get_group(1))` on a (replicate, shard) mesh, or an MPI
communicator split alike); the all-reduce across replicas stays FSDP's.  A Comm of other ranks
is refused at the first call.  torch is imported only when a call runs or a model is
registered.
"""
import threading
import warnings

from . import _lib
from ._lib import SqueezeError
from .ddp import _torch_dtypes, fnv1a64

__all__ = ["SqueezeReduceScatter", "register", "module_key", "dense_reduce_scatter"]


def module_key(name):
    """The key of the FSDP module called `name` in its model (named_modules()): FNV-1a of its
    UTF-8 bytes, never 0 (0 asks the library for a key derived from the address, which FSDP's
    fresh reduce-scatter buffers change every step)."""
    return fnv1a64(("fsdp:" + name).encode()) or 1


def dense_reduce_scatter(output_tensor, input_tensor, group, op, async_op=False):
    """FSDP's default reduce-scatter (torch.distributed.reduce_scatter_tensor): the fallback."""
    import torch.distributed as dist
    return dist.reduce_scatter_tensor(output=output_tensor, input=input_tensor, group=group,
                                      op=op, async_op=async_op)


def _mpi_min():
    from mpi4py import MPI
    return MPI.MIN


def _torch_float32():
    import torch
    return torch.float32


def _squeeze_op(op):
    """SQZ_OP_SUM / SQZ_OP_AVG for torch's ReduceOp.SUM / AVG, None for any other op."""
    import torch.distributed as dist
    if op == dist.ReduceOp.SUM:
        return _lib.SQZ_OP_SUM
    if op == dist.ReduceOp.AVG:
        return _lib.SQZ_OP_AVG
    return None


class _Done:
    """The Work of a reduce-scatter already ordered on its stream (async_op=True callers)."""

    def wait(self, timeout=None):
        return True

    def is_completed(self):
        return True


class SqueezeReduceScatter:
    """FSDP2's ReduceScatter (allocate, __call__) over a Squeeze Comm; see the module text.

    key: the module's key (module_key(name)); fallback: what runs the calls Squeeze does not
    take, called as fallback(output_tensor, input_tensor, group, op, async_op).  Counters:
    calls (all), squeezed (run by the Squeeze engine: compressed, or its own dense exchange on
    device memory), passed (host calls the policy passed through: the fallback ran them, no
    warning), fallbacks (calls Squeeze cannot take, by reason)."""

    def __init__(self, comm, key, fallback=dense_reduce_scatter):
        self.comm = comm
        self.key = int(key)
        self.fallback = fallback
        self.calls = 0
        self.squeezed = 0
        self.passed = 0
        self.fallbacks = {}
        self._group_checked = False
        self._lock = threading.Lock()

    def allocate(self, size, *, dtype, device):
        import torch
        return torch.empty(*size, dtype=dtype, device=device)

    def _why_not(self, output_tensor, input_tensor, group, op):
        """Why this call goes to the fallback, or None when Squeeze takes it."""
        if self.comm is None or self.comm.closed:
            return "the Squeeze Comm is closed"
        if _squeeze_op(op) is None:
            return f"op {op} is not SUM or AVG"
        if input_tensor.dtype not in _torch_dtypes() or output_tensor.dtype != input_tensor.dtype:
            return f"dtype {input_tensor.dtype} is not float32, float16 or bfloat16"
        if input_tensor.is_cuda != bool(self.comm.on_device) or \
                output_tensor.device != input_tensor.device:
            return (f"{input_tensor.device} memory on a Comm of "
                    f"{'device' if self.comm.on_device else 'host'} memory")
        if not self.comm.on_device and input_tensor.dtype != _torch_float32():
            return f"{input_tensor.dtype} on the host (the host engine reduces float32)"
        if not (input_tensor.is_contiguous() and output_tensor.is_contiguous()):
            return "non-contiguous tensors"
        world = group.size() if group is not None else 1
        if output_tensor.numel() * world != input_tensor.numel():
            return (f"input of {input_tensor.numel()} elements for an output of "
                    f"{output_tensor.numel()} on {world} ranks")
        return None

    def _check_group(self, group):
        """Once, collectively over an MPI Comm: the block its reduce-scatter gives each rank (the
        MPI rank, host-major on a hierarchical Comm) must be the process group's rank, else
        every shard would land on the wrong rank.  Any rank's mismatch raises SqueezeError on
        every rank, before anything is sent (no rank is left waiting in the reduce-scatter)."""
        mpi = getattr(self.comm, "mpi", None)
        if self._group_checked or mpi is None or group is None:
            return
        mine = getattr(self.comm, "block_rank", mpi.Get_rank())
        ok = (mpi.Get_size(), mine) == (group.size(), group.rank())
        if not mpi.allreduce(int(ok), op=_mpi_min()):
            raise SqueezeError(_lib.SQZ_ERR_MISMATCH,
                               f"squeeze.fsdp: the Comm's reduce-scatter gives the ranks other "
                               f"blocks than the process group expects (here: block {mine} of "
                               f"{mpi.Get_size()}, the group's rank {group.rank()} of "
                               f"{group.size()}; a hierarchical Comm orders the ranks host-major)")
        self._group_checked = True

    def __call__(self, output_tensor, input_tensor, group, op, async_op=False):
        self._check_group(group)
        with self._lock:
            self.calls += 1
        why = self._why_not(output_tensor, input_tensor, group, op)
        if why is not None:
            with self._lock:
                first = why not in self.fallbacks
                self.fallbacks[why] = self.fallbacks.get(why, 0) + 1
            if first:
                warnings.warn(f"squeeze.fsdp: {why}: FSDP's reduce-scatter takes these calls",
                              RuntimeWarning, stacklevel=2)
            return self.fallback(output_tensor, input_tensor, group, op, async_op)
        dtype = _torch_dtypes()[input_tensor.dtype]
        code = _squeeze_op(op)
        count = output_tensor.numel()
        if input_tensor.is_cuda:
            import torch
            stream = torch.cuda.current_stream(input_tensor.device)
            self.comm.reduce_scatter_async(output_tensor.data_ptr(), count, dtype, code,
                                           self.key, stream.cuda_stream,
                                           sendbuf=input_tensor.data_ptr())
        else:
            try:
                self.comm.reduce_scatter_block(output_tensor.data_ptr(), count, dtype, code,
                                               self.key, sendbuf=input_tensor.data_ptr())
            except SqueezeError as e:
                if e.status != _lib.SQZ_ERR_NOT_SUPPORTED:
                    raise
                # The policy passed the call through (too small, ...): on the host the caller
                # runs the dense reduce-scatter, on every rank alike.
                with self._lock:
                    self.passed += 1
                return self.fallback(output_tensor, input_tensor, group, op, async_op)
        with self._lock:
            self.squeezed += 1
        return _Done() if async_op else None


def register(model, comm, fallback=dense_reduce_scatter):
    """Installs a SqueezeReduceScatter on every FSDP module of `model` (fully_shard applied; the
    model itself included), keyed by the module's name.  Returns {name: SqueezeReduceScatter}.
    Raises TypeError when the model has no FSDP module (fully_shard first; PyTorch >= 2.6)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except Exception as e:  # (ImportError; torch 1.13 under Python 3.11 raises ValueError)
        raise TypeError("squeeze.fsdp needs PyTorch's FSDP2 (torch.distributed.fsdp."
                        "FSDPModule, PyTorch >= 2.6)") from e
    hooks = {}
    for name, module in model.named_modules():
        if isinstance(module, FSDPModule):
            hook = SqueezeReduceScatter(comm, module_key(name), fallback)
            module.set_custom_reduce_scatter(hook)
            hooks[name] = hook
    if not hooks:
        raise TypeError("squeeze.fsdp.register: the model has no FSDP module (apply fully_shard "
                        "to it first)")
    return hooks

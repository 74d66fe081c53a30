"""Squeeze: compressed collectives for distributed training (Python binding, ctypes only).

    import squeeze
    squeeze.version()                                 # (0, 1, 0)
    with squeeze.Context(method="quant", quant_bits=4) as ctx:
        print(ctx.method, ctx.stats())
        for p in ctx.params(): print(p["env"], p["default"], p["current"])

GPU path (device buffers over NCCL, stream-ordered): squeeze.nccl makes a dedicated NCCL
communicator, Context.nccl_comm() wraps it in a Comm, Comm.allreduce_async() all-reduces device
memory on a CUDA stream.  squeeze.ddp is a PyTorch DDP communication hook built on them (torch is
imported only by squeeze.ddp).

MoE (LSH-MoE token exchanges, host memory; `import squeeze.moe`, which needs numpy):
Context.mpi_comm() wraps an mpi4py communicator in a Comm; squeeze.moe.dispatch() / Handle.combine() and the backward calls work on numpy arrays, and
squeeze.moe.moe_layer() runs dispatch -> expert -> combine under PyTorch autograd.

libsqueeze.so is looked up, on first use, at $SQUEEZE_LIB, beside the package or in the
installation prefix, in the build tree (../../.libs), then through ctypes.util.find_library;
failing that the first call raises SqueezeError naming every place tried.
"""
from ._lib import (  # noqa: F401
    SqueezeError,
    status_string,
    SQZ_OK,
    SQZ_ERR_NOT_SUPPORTED,
    SQZ_ERR_INVALID_PARAM,
    SQZ_ERR_NO_MEMORY,
    SQZ_ERR_CUDA,
    SQZ_ERR_MPI,
    SQZ_ERR_NCCL,
    SQZ_ERR_NONFINITE,
    SQZ_ERR_CORRUPT,
    SQZ_ERR_MISMATCH,
    SQZ_ERR_PLUGIN,
    SQZ_ERR_TRANSPORT,
    SQZ_ERR_INTERNAL,
    SQZ_ERR_IO,
    SQZ_DTYPE_FLOAT32,
    SQZ_DTYPE_FLOAT16,
    SQZ_DTYPE_BFLOAT16,
    SQZ_OP_SUM,
    SQZ_OP_AVG,
)
from ._core import (  # noqa: F401
    Context,
    Comm,
    LocalGroup,
    DeviceGroup,
    version,
    version_string,
    gpu_built,
    library_path,
    dtype_code,
    op_code,
)
from . import nccl  # noqa: F401

__all__ = [
    "SQZ_OK", "SQZ_ERR_NOT_SUPPORTED", "SQZ_ERR_INVALID_PARAM", "SQZ_ERR_NO_MEMORY", "SQZ_ERR_CUDA",
    "SQZ_ERR_MPI", "SQZ_ERR_NCCL", "SQZ_ERR_NONFINITE", "SQZ_ERR_CORRUPT", "SQZ_ERR_MISMATCH",
    "SQZ_ERR_PLUGIN", "SQZ_ERR_TRANSPORT", "SQZ_ERR_INTERNAL", "SQZ_ERR_IO",
    "SqueezeError", "status_string", "Context", "Comm", "LocalGroup", "DeviceGroup", "version", "version_string", "gpu_built",
    "library_path", "dtype_code", "op_code", "nccl",
    "SQZ_DTYPE_FLOAT32", "SQZ_DTYPE_FLOAT16", "SQZ_DTYPE_BFLOAT16", "SQZ_OP_SUM", "SQZ_OP_AVG",
]

"""A dedicated NCCL communicator for Squeeze, made through the NCCL that libsqueeze resolves (the
libnccl.so.2 already loaded in the process, e.g. PyTorch's, or one it loads).

    uid = nccl.get_unique_id() if rank == 0 else None   # then broadcast uid to every rank
    h = nccl.comm_init(nranks, uid, rank)                # on the current CUDA device
    comm = ctx.nccl_comm(h)
    ...
    comm.close(); nccl.comm_destroy(h)

Every function raises SqueezeError (never crashes) when the library was built without the GPU
path, or when NCCL or a GPU is unavailable.
"""
import ctypes

from . import _lib
from ._lib import SqueezeError, check

UNIQUE_ID_BYTES = _lib.NCCL_UNIQUE_ID_BYTES


def _gpu_fn(name):
    # The library itself answers SQZ_ERR_NOT_SUPPORTED when built without CUDA/NCCL; a library
    # that predates the GPU path lacks the symbol (SqueezeError from fn()).
    return _lib.load().fn(name)


def get_unique_id():
    """ncclGetUniqueId: 128 bytes to send from one rank to all the others."""
    fn = _gpu_fn("sqz_nccl_get_unique_id")
    buf = ctypes.create_string_buffer(UNIQUE_ID_BYTES)
    check(fn(buf, UNIQUE_ID_BYTES), "sqz_nccl_get_unique_id")
    return buf.raw


def comm_init(nranks, uid, rank):
    """ncclCommInitRank on the current CUDA device (collective over the nranks ranks).
    Returns the ncclComm_t as an int handle."""
    uid = bytes(uid)
    if len(uid) != UNIQUE_ID_BYTES:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                           f"an NCCL unique id has {UNIQUE_ID_BYTES} bytes, not {len(uid)}")
    nranks, rank = int(nranks), int(rank)
    if not 0 <= rank < nranks:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, f"rank {rank} outside [0, {nranks})")
    fn = _gpu_fn("sqz_nccl_comm_init")
    buf = ctypes.create_string_buffer(uid, UNIQUE_ID_BYTES)
    out = ctypes.c_void_p()
    check(fn(nranks, buf, UNIQUE_ID_BYTES, rank, ctypes.byref(out)),
          f"sqz_nccl_comm_init(nranks={nranks}, rank={rank})")
    if not out.value:
        raise SqueezeError(_lib.SQZ_ERR_NCCL, "sqz_nccl_comm_init returned a NULL communicator")
    return int(out.value)


def comm_destroy(handle):
    """ncclCommDestroy (None / 0 accepted).  Destroy every Comm over it first, and let its work
    finish (e.g. torch.cuda.synchronize())."""
    if not handle:
        return
    _lib.load().fn("sqz_nccl_comm_destroy")(ctypes.c_void_p(int(handle)))

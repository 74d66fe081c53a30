"""Finding libsqueeze.so and declaring the C prototypes (ctypes only, no compiled extension).

The library is loaded on first use, not at import: `import squeeze` always works, and a missing
or unloadable library raises SqueezeError (naming every place that was tried) at the first call
that needs it.

Every struct here mirrors include/squeeze.h and include/squeeze/compressor_v1.h field by field;
when those headers change, this file changes with them.
"""
import ctypes
import ctypes.util
import os
import sys
import threading

# -------------------------------------------------------------------------------------------------
# Constants of include/squeeze.h and include/squeeze/compressor_v1.h
# -------------------------------------------------------------------------------------------------
SQZ_OK = 0
SQZ_ERR_NOT_SUPPORTED = -1
SQZ_ERR_INVALID_PARAM = -2
SQZ_ERR_NO_MEMORY = -3
SQZ_ERR_CUDA = -4
SQZ_ERR_MPI = -5
SQZ_ERR_NCCL = -6
SQZ_ERR_NONFINITE = -7
SQZ_ERR_CORRUPT = -8
SQZ_ERR_MISMATCH = -9
SQZ_ERR_PLUGIN = -10
SQZ_ERR_TRANSPORT = -11
SQZ_ERR_INTERNAL = -12
SQZ_ERR_IO = -13

SQZ_DTYPE_FLOAT32 = 1
SQZ_DTYPE_FLOAT16 = 2
SQZ_DTYPE_BFLOAT16 = 3

SQZ_OP_SUM = 1
SQZ_OP_AVG = 2

SQZ_MOE_EXACT = 0
SQZ_MOE_DEDUP = 1
SQZ_MOE_LSH = 2

SQZ_PARAM_INT = 1
SQZ_PARAM_DOUBLE = 2
SQZ_PARAM_SIZE = 3
SQZ_PARAM_BOOL = 4
SQZ_PARAM_ENUM = 5
SQZ_PARAM_STRING = 6

PARAM_TYPE_NAMES = {
    SQZ_PARAM_INT: "int",
    SQZ_PARAM_DOUBLE: "double",
    SQZ_PARAM_SIZE: "size",
    SQZ_PARAM_BOOL: "bool",
    SQZ_PARAM_ENUM: "enum",
    SQZ_PARAM_STRING: "string",
}

SQZ_EXCHANGE_ALLGATHER = 1
SQZ_EXCHANGE_REDUCE_SCATTER = 2
SQZ_EXCHANGE_SUMMABLE = 3

EXCHANGE_NAMES = {
    SQZ_EXCHANGE_ALLGATHER: "allgather",
    SQZ_EXCHANGE_REDUCE_SCATTER: "reduce_scatter",
    SQZ_EXCHANGE_SUMMABLE: "summable",
}

NCCL_UNIQUE_ID_BYTES = 128

# Fallback names for the codes when the library itself cannot be asked (it failed to load).
_STATUS_NAMES = {
    SQZ_OK: "success",
    SQZ_ERR_NOT_SUPPORTED: "not supported",
    SQZ_ERR_INVALID_PARAM: "invalid parameter",
    SQZ_ERR_NO_MEMORY: "out of memory",
    SQZ_ERR_CUDA: "CUDA error",
    SQZ_ERR_MPI: "MPI error",
    SQZ_ERR_NCCL: "NCCL error",
    SQZ_ERR_NONFINITE: "non-finite input",
    SQZ_ERR_CORRUPT: "corrupt payload",
    SQZ_ERR_MISMATCH: "settings differ between ranks",
    SQZ_ERR_PLUGIN: "plugin error",
    SQZ_ERR_TRANSPORT: "transport error",
    SQZ_ERR_INTERNAL: "internal error",
    SQZ_ERR_IO: "I/O error",
}


class SqueezeError(RuntimeError):
    """An error from libsqueeze (or from finding it).

    `status` is the sqz_status_t code (an int, SQZ_ERR_*), `message` the detail: the text the
    library wrote (a bad parameter names its SQZ_ variable and bounds) or what was attempted.
    """

    def __init__(self, status, message=""):
        self.status = int(status)
        self.message = str(message)
        self.status_string = status_string(self.status)
        text = f"{self.message} ({self.status_string}, status {self.status})" if self.message \
            else f"{self.status_string} (status {self.status})"
        super().__init__(text)


def status_string(status):
    """sqz_status_string(status), or a built-in name when the library is not loadable."""
    lib = _loaded
    if lib is not None:
        try:
            s = lib.lib.sqz_status_string(int(status))
            if s:
                return s.decode("utf-8", "replace")
        except Exception:  # pragma: no cover - never expected
            pass
    return _STATUS_NAMES.get(int(status), f"unknown status {int(status)}")


# -------------------------------------------------------------------------------------------------
# Structs
# -------------------------------------------------------------------------------------------------
class sqz_param_def_v1_t(ctypes.Structure):
    """include/squeeze/compressor_v1.h: struct sqz_param_def_v1."""
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("type", ctypes.c_int),           # sqz_param_type_t
        ("default_value", ctypes.c_char_p),
        ("min", ctypes.c_double),
        ("max", ctypes.c_double),
        ("choices", ctypes.c_char_p),
        ("offset", ctypes.c_size_t),
        ("help", ctypes.c_char_p),
    ]


class sqz_compressor_v1_t(ctypes.Structure):
    """include/squeeze/compressor_v1.h: struct sqz_compressor_v1 (function pointers as void *:
    the binding only reads the descriptive fields)."""
    _fields_ = [
        ("abi", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
        ("exchange", ctypes.c_int),       # sqz_exchange_t
        ("params", ctypes.POINTER(sqz_param_def_v1_t)),
        ("nparams", ctypes.c_size_t),
        ("config_size", ctypes.c_size_t),
        ("create", ctypes.c_void_p),
        ("query", ctypes.c_void_p),
        ("max_payload", ctypes.c_void_p),
        ("compress", ctypes.c_void_p),
        ("decompress", ctypes.c_void_p),
        ("destroy", ctypes.c_void_p),
        # Appended fields: present only when `size` covers them.
        ("shared_len", ctypes.c_void_p),
        ("shared_fill", ctypes.c_void_p),
    ]


class sqz_stats_t(ctypes.Structure):
    """include/squeeze.h: struct sqz_stats."""
    _fields_ = [
        ("calls", ctypes.c_uint64),
        ("calls_compressed", ctypes.c_uint64),
        ("calls_fallback", ctypes.c_uint64),
        ("calls_warmup", ctypes.c_uint64),
        ("calls_nonfinite", ctypes.c_uint64),
        ("bytes_in", ctypes.c_uint64),
        ("bytes_wire", ctypes.c_uint64),
        ("seconds_compress", ctypes.c_double),
        ("seconds_comm", ctypes.c_double),
        ("rel_error_sum", ctypes.c_double),
        ("residuals_dropped", ctypes.c_uint64),
        ("state_evictions", ctypes.c_uint64),
        ("state_bytes", ctypes.c_uint64),
    ]


class sqz_layer_t(ctypes.Structure):
    """include/squeeze.h: struct sqz_layer."""
    _fields_ = [
        ("offset", ctypes.c_size_t),
        ("rows", ctypes.c_size_t),
        ("cols", ctypes.c_size_t),
        ("id", ctypes.c_uint64),
    ]


# Transport callbacks (include/squeeze.h: struct sqz_transport).
TRANSPORT_ALLGATHERV_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_size_t, ctypes.c_void_p,
                                           ctypes.POINTER(ctypes.c_size_t),
                                           ctypes.POINTER(ctypes.c_size_t))
TRANSPORT_ALLTOALLV_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                                          ctypes.POINTER(ctypes.c_size_t),
                                          ctypes.POINTER(ctypes.c_size_t))
TRANSPORT_ALLREDUCE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_void_p, ctypes.c_size_t)
TRANSPORT_ISEND_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_void_p))
TRANSPORT_IRECV_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_size_t),
                                      ctypes.POINTER(ctypes.c_void_p))
TRANSPORT_TEST_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_int))
TRANSPORT_WAIT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class sqz_transport_t(ctypes.Structure):
    """include/squeeze.h: struct sqz_transport (the optional point-to-point functions may be left
    NULL: the one-rank transport offers only the collectives, the mpi4py one all of them)."""
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("self", ctypes.c_void_p),
        ("rank", ctypes.c_int),
        ("nranks", ctypes.c_int),
        ("allgatherv", TRANSPORT_ALLGATHERV_FN),
        ("alltoallv", TRANSPORT_ALLTOALLV_FN),
        ("allreduce_f32_sum", TRANSPORT_ALLREDUCE_FN),
        ("isend", TRANSPORT_ISEND_FN),
        ("irecv", TRANSPORT_IRECV_FN),
        ("test", TRANSPORT_TEST_FN),
        ("wait", TRANSPORT_WAIT_FN),
    ]


class sqz_moe_stats_t(ctypes.Structure):
    """include/squeeze.h: struct sqz_moe_stats."""
    _fields_ = [
        ("calls", ctypes.c_uint64),
        ("tokens", ctypes.c_uint64),
        ("rows", ctypes.c_uint64),
        ("bytes_in", ctypes.c_uint64),
        ("bytes_wire", ctypes.c_uint64),
        ("seconds_compress", ctypes.c_double),
        ("seconds_comm", ctypes.c_double),
    ]


# void (*)(void *arg, const char *owner, const sqz_param_def_v1_t *def, const char *current,
#          const char *source)
PARAM_VISIT_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.POINTER(sqz_param_def_v1_t), ctypes.c_char_p,
                                  ctypes.c_char_p)
# void (*)(void *arg, const sqz_compressor_v1_t *c, const char *origin)
COMPRESSOR_VISIT_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(sqz_compressor_v1_t),
                                       ctypes.c_char_p)

_vp = ctypes.c_void_p
_pvp = ctypes.POINTER(ctypes.c_void_p)
_int = ctypes.c_int
_size = ctypes.c_size_t
_u64 = ctypes.c_uint64
_str = ctypes.c_char_p
_psize = ctypes.POINTER(ctypes.c_size_t)

# name: (restype, argtypes, required).  Optional ones (the GPU path, layouts) may be missing from
# an older library: their wrappers then raise SqueezeError(SQZ_ERR_NOT_SUPPORTED).
_PROTOTYPES = {
    "sqz_version_number": (ctypes.c_uint, [], True),
    "sqz_status_string": (_str, [_int], True),
    "sqz_config_create": (_int, [_pvp], True),
    "sqz_config_set": (_int, [_vp, _str, _str], True),
    "sqz_config_load_env": (_int, [_vp], True),
    "sqz_config_load_file": (_int, [_vp, _str], True),
    "sqz_config_destroy": (None, [_vp], True),
    "sqz_ctx_create": (_int, [_vp, _pvp, _vp, _size], True),
    "sqz_ctx_destroy": (None, [_vp], True),
    "sqz_ctx_set_log_rank": (None, [_vp, _int], True),
    "sqz_ctx_settings_digest": (_int, [_vp, _vp, _size, ctypes.POINTER(_u64)], True),
    "sqz_ctx_visit_params": (None, [_vp, PARAM_VISIT_FN, _vp], True),
    "sqz_ctx_visit_compressors": (None, [_vp, COMPRESSOR_VISIT_FN, _vp], True),
    "sqz_ctx_method": (_str, [_vp], True),
    "sqz_stats_get": (None, [_vp, ctypes.POINTER(sqz_stats_t)], True),
    "sqz_stats_write_json": (_int, [_vp, _str, _int], True),
    "sqz_stats_json": (ctypes.c_size_t, [_vp, _int, ctypes.c_char_p, ctypes.c_size_t], False),
    "sqz_comm_create": (_int, [_vp, ctypes.POINTER(sqz_transport_t), _pvp], True),
    "sqz_comm_create_hier": (_int, [_vp, ctypes.POINTER(sqz_transport_t),
                                    ctypes.POINTER(sqz_transport_t), _pvp], True),
    "sqz_comm_destroy": (None, [_vp], True),
    "sqz_allreduce": (_int, [_vp, _vp, _vp, _size, _int, _int, _u64], True),
    "sqz_reduce_scatter_block": (_int, [_vp, _vp, _vp, _size, _int, _int, _u64], True),
    "sqz_comm_eligible": (_int, [_vp, _size, _int, _int], True),
    # The optimizer-side collective (squeeze.optim) and in-process groups (squeeze.LocalGroup)
    "sqz_ef_allreduce": (_int, [_vp, _vp, _size, _int, _int, _u64, _vp], False),
    "sqz_ef_forget": (None, [_vp, _u64], False),
    "sqz_local_group_create": (_int, [_int, _pvp], False),
    "sqz_local_group_destroy": (None, [_vp], False),
    "sqz_local_group_transport": (_int, [_vp, _int, ctypes.POINTER(sqz_transport_t)], False),
    # Layer layouts
    "sqz_layout_register": (_int, [_vp, _u64, _size, ctypes.POINTER(sqz_layer_t), _size], False),
    "sqz_state_save": (_size, [_vp, _vp, _size], False),
    "sqz_state_load": (_int, [_vp, _vp, _size], False),
    "sqz_layout_get": (_size, [_vp, _u64, _size, ctypes.POINTER(sqz_layer_t), _size], False),
    # MoE token all-to-alls (pointers: sendbuf, counts..., recvbuf; sizes as size_t arrays)
    "sqz_moe_alltoallv": (_int, [_vp, _int, _vp, _psize, _psize, _vp, _psize, _psize, _size,
                                 _int], False),
    "sqz_moe_dispatch": (_int, [_vp, _int, _vp, _psize, _psize, _vp, _psize, _psize, _size,
                                _pvp], False),
    "sqz_moe_combine": (_int, [_vp, _vp, _vp, _vp], False),
    "sqz_moe_combine_backward": (_int, [_vp, _vp, _vp, _vp, _vp], False),
    "sqz_moe_dispatch_backward": (_int, [_vp, _vp, _vp, _vp], False),
    "sqz_moe_centroid_mean": (_int, [_vp, _vp, _vp], False),
    "sqz_moe_handle_tokens": (_size, [_vp, ctypes.POINTER(_size)], False),
    "sqz_moe_handle_free": (None, [_vp], False),
    "sqz_moe_stats_get": (None, [_vp, _int, ctypes.POINTER(sqz_moe_stats_t)], False),
    # GPU path
    "sqz_gpu_built": (_int, [], False),
    "sqz_comm_create_nccl": (_int, [_vp, _vp, _pvp], False),
    "sqz_allreduce_async": (_int, [_vp, _vp, _vp, _size, _int, _int, _u64, _vp], False),
    "sqz_reduce_scatter_async": (_int, [_vp, _vp, _vp, _size, _int, _int, _u64, _vp], False),
    "sqz_nccl_get_unique_id": (_int, [_vp, _size], False),
    "sqz_nccl_comm_init": (_int, [_int, _vp, _size, _int, _pvp], False),
    "sqz_nccl_comm_destroy": (None, [_vp], False),
    "sqz_device_group_create": (_int, [_int, _int, _pvp], False),
    "sqz_device_group_destroy": (None, [_vp], False),
    "sqz_comm_create_device_group": (_int, [_vp, _vp, _int, _pvp], False),
}


class _Lib:
    """The loaded library and its declared functions."""

    def __init__(self, lib, path):
        self.lib = lib
        self.path = path
        self.missing = set()
        for name, (restype, argtypes, required) in _PROTOTYPES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                if required:
                    raise SqueezeError(
                        SQZ_ERR_NOT_SUPPORTED,
                        f"{path} does not export {name}: not a libsqueeze of this binding's API")
                self.missing.add(name)
                continue
            fn.restype = restype
            fn.argtypes = argtypes

    def has(self, name):
        return name not in self.missing

    def fn(self, name):
        """The function `name`, or SqueezeError(SQZ_ERR_NOT_SUPPORTED) when this build lacks it."""
        if name in self.missing:
            raise SqueezeError(SQZ_ERR_NOT_SUPPORTED,
                               f"{self.path} has no {name} (a libsqueeze older than this binding)")
        return getattr(self.lib, name)


_loaded = None
_load_lock = threading.Lock()


def candidates():
    """The places tried, in order, as (description, path-or-name) pairs."""
    out = []
    env = os.environ.get("SQUEEZE_LIB")
    if env:
        out.append(("SQUEEZE_LIB", env))
        return out  # an explicit choice is not second-guessed
    pkgdir = os.path.dirname(os.path.abspath(__file__))
    # Installed by `make install` (into <prefix>/lib/pythonX.Y/site-packages/squeeze/): _install.py
    # names the libdir.  Then a copy inside the package, the prefix around the package (older
    # installs put it under <prefix>/share/squeeze/python/), the build tree, the loader's path.
    try:
        from . import _install
        out.append(("make install's libdir", os.path.join(_install.LIBDIR, "libsqueeze.so")))
    except ImportError:
        pass
    out.append(("package directory", os.path.join(pkgdir, "libsqueeze.so")))
    out.append(("installed prefix (share/squeeze/python)", os.path.normpath(
        os.path.join(pkgdir, "..", "..", "..", "..", "lib", "libsqueeze.so"))))
    out.append(("installed prefix (site-packages)", os.path.normpath(
        os.path.join(pkgdir, "..", "..", "..", "libsqueeze.so"))))
    out.append(("sys.prefix", os.path.join(sys.prefix, "lib", "libsqueeze.so")))
    # Build tree: python/squeeze/ -> <top_builddir>/.libs/libsqueeze.so (in-tree builds).
    out.append(("build tree", os.path.normpath(
        os.path.join(pkgdir, "..", "..", ".libs", "libsqueeze.so"))))
    found = ctypes.util.find_library("squeeze")
    out.append(("ctypes.util.find_library('squeeze')", found))
    return out


def load():
    """Loads libsqueeze.so once; raises SqueezeError listing what was tried."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        tried = []
        for what, path in candidates():
            if not path:
                tried.append(f"{what}: nothing found")
                continue
            if os.sep in path and not os.path.exists(path):
                tried.append(f"{what}: {path} (no such file)")
                continue
            try:
                lib = ctypes.CDLL(path)
            except OSError as e:
                tried.append(f"{what}: {path} ({e})")
                continue
            _loaded = _Lib(lib, path)
            return _loaded
        raise SqueezeError(SQZ_ERR_NOT_SUPPORTED,
                           "libsqueeze.so not found; tried: " + "; ".join(tried) +
                           " (set SQUEEZE_LIB to the library's path)")


def check(status, what="", errbuf=None):
    """Raises SqueezeError unless status is SQZ_OK.  `errbuf`, when given, is a ctypes string
    buffer whose text (written by the library) becomes the message."""
    status = int(status)
    if status == SQZ_OK:
        return
    msg = ""
    if errbuf is not None:
        msg = errbuf.value.decode("utf-8", "replace")
    if what and msg:
        msg = f"{what}: {msg}"
    elif what:
        msg = what
    raise SqueezeError(status, msg)


def cstr(value):
    """bytes for a C string argument."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")

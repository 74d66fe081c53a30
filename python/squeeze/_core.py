"""Context (configuration, parameters, stats) and Comm (one engine over an NCCL communicator)."""
import ctypes
import json
import threading
import weakref

from . import _lib
from ._lib import SqueezeError, check, cstr

_DTYPES = {
    "float32": _lib.SQZ_DTYPE_FLOAT32, "fp32": _lib.SQZ_DTYPE_FLOAT32,
    "float": _lib.SQZ_DTYPE_FLOAT32, "f32": _lib.SQZ_DTYPE_FLOAT32,
    "float16": _lib.SQZ_DTYPE_FLOAT16, "fp16": _lib.SQZ_DTYPE_FLOAT16,
    "half": _lib.SQZ_DTYPE_FLOAT16, "f16": _lib.SQZ_DTYPE_FLOAT16,
    "bfloat16": _lib.SQZ_DTYPE_BFLOAT16, "bf16": _lib.SQZ_DTYPE_BFLOAT16,
}
_OPS = {"sum": _lib.SQZ_OP_SUM, "avg": _lib.SQZ_OP_AVG, "mean": _lib.SQZ_OP_AVG}
_U64 = (1 << 64) - 1


def dtype_code(dtype):
    """SQZ_DTYPE_* for an int code, a name ("float32", "bf16") or anything whose str() ends in
    one (torch.float16 prints as "torch.float16", numpy.dtype('float32') as "float32")."""
    if isinstance(dtype, int):
        if dtype in (_lib.SQZ_DTYPE_FLOAT32, _lib.SQZ_DTYPE_FLOAT16, _lib.SQZ_DTYPE_BFLOAT16):
            return dtype
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, f"unknown sqz_dtype_t {dtype}")
    name = str(dtype).rsplit(".", 1)[-1].lower()
    try:
        return _DTYPES[name]
    except KeyError:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                           f"dtype {dtype!r} is not float32, float16 or bfloat16") from None


def op_code(op):
    """SQZ_OP_* for an int code or "sum" / "avg"."""
    if isinstance(op, int):
        if op in (_lib.SQZ_OP_SUM, _lib.SQZ_OP_AVG):
            return op
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, f"unknown sqz_op_t {op}")
    try:
        return _OPS[str(op).rsplit(".", 1)[-1].lower()]
    except KeyError:
        raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, f"op {op!r} is not sum or avg") from None


def _ptr(value):
    """A pointer argument from an int address (or None / 0 for NULL)."""
    if value is None:
        return None
    value = int(value)
    return value if value else None


def _param_value(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def version():
    """(major, minor, patch) of the loaded library."""
    n = int(_lib.load().lib.sqz_version_number())
    return (n // 10000, (n // 100) % 100, n % 100)


def version_string():
    return "%d.%d.%d" % version()


def gpu_built():
    """True when the loaded library was built with CUDA and NCCL (False for a library that
    predates the GPU path)."""
    lib = _lib.load()
    if not lib.has("sqz_gpu_built"):
        return False
    return bool(lib.lib.sqz_gpu_built())


def library_path():
    """The path of the loaded libsqueeze.so."""
    return _lib.load().path


def _decode(b):
    return None if b is None else b.decode("utf-8", "replace")


class _Closing:
    """A handle released by close() (idempotent): at the end of a with-block, or when collected."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Context(_Closing):
    """A library context: every parameter parsed and checked, plugins loaded, a method selected.

        ctx = squeeze.Context(method="quant", quant_bits=4)

    Keyword parameters name Squeeze parameters without their SQZ_ prefix, in any case
    (quant_bits=4 is SQZ_QUANT_BITS=4); booleans become 1/0.  With env=True (the default) the
    SQZ_* environment variables (and the file named by SQZ_CONFIG) are read first, so keywords win
    over them; config_file, when given, is read before the environment (which wins over it, as in
    the C library).  A bad value raises SqueezeError with the library's message, which names the
    variable and its bounds.
    """

    def __init__(self, env=True, config_file=None, log_rank=None, **params):
        self._lib = _lib.load()
        self._ptr = None
        self._lock = threading.Lock()
        self._comms = weakref.WeakSet()
        self._order = []  # weak references to the comms, in creation order (state_dict)
        L = self._lib.lib
        cfg = ctypes.c_void_p()
        check(L.sqz_config_create(ctypes.byref(cfg)), "sqz_config_create")
        try:
            if config_file is not None:
                check(L.sqz_config_load_file(cfg, cstr(config_file)),
                      f"reading the config file {config_file}")
            if env:
                check(L.sqz_config_load_env(cfg),
                      "reading the SQZ_* environment (and SQZ_CONFIG)")
            for name, value in params.items():
                key = name.upper()
                check(L.sqz_config_set(cfg, cstr(key), cstr(_param_value(value))),
                      f"setting {key}={value!r}")
            errbuf = ctypes.create_string_buffer(1024)
            ptr = ctypes.c_void_p()
            check(L.sqz_ctx_create(cfg, ctypes.byref(ptr), errbuf, len(errbuf)), "", errbuf)
            self._ptr = ptr.value
        finally:
            L.sqz_config_destroy(cfg)
        if log_rank is not None:
            self.set_log_rank(log_rank)

    # -- lifecycle ---------------------------------------------------------------------------
    def _handle(self):
        if not self._ptr:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "the Context is closed")
        return self._ptr

    @property
    def closed(self):
        return not self._ptr

    def close(self):
        """Destroys every Comm made from this context, then the context.  Idempotent."""
        with self._lock:
            if not self._ptr:
                return
            for comm in list(self._comms):
                comm.close()
            ptr, self._ptr = self._ptr, None
            self._lib.lib.sqz_ctx_destroy(ptr)

    def __repr__(self):
        if not self._ptr:
            return "<squeeze.Context closed>"
        return f"<squeeze.Context method={self.method!r}>"

    def _adopt(self, comm):
        self._comms.add(comm)
        self._order.append(weakref.ref(comm))

    def _live_comms(self):
        return [c for c in (r() for r in self._order) if c is not None and not c.closed]

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self):
        """The error-feedback state of every open Comm of this context (residuals, estimators,
        warm starts, call counters), in their creation order: save it with the model's
        checkpoint (torch.save takes it as it is) and give it to load_state_dict() in the
        restarted job, whose Comms are created in the same order, to continue bit for bit.
        Take it at the same point on every rank, with no call in flight."""
        return {"format": "squeeze-context-state", "version": 1,
                "comms": [c.state_dict() for c in self._live_comms()]}

    def load_state_dict(self, state):
        """Restores state_dict()'s result into this context's open Comms, matched by creation
        order.  Raises SqueezeError when the number of Comms, a method, the rank or the settings
        differ (nothing is changed in a Comm whose state is refused)."""
        if not isinstance(state, dict) or state.get("format") != "squeeze-context-state":
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "not a squeeze Context state_dict")
        comms, saved = self._live_comms(), state.get("comms", [])
        if len(comms) != len(saved):
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM,
                               f"the state holds {len(saved)} Comm(s), this Context has "
                               f"{len(comms)} open: create them in the same order first")
        for comm, s in zip(comms, saved):
            comm.load_state_dict(s)

    # -- information -------------------------------------------------------------------------
    @property
    def method(self):
        """The selected method (SQZ_METHOD)."""
        return _decode(self._lib.lib.sqz_ctx_method(self._handle()))

    def set_log_rank(self, rank):
        """The rank printed in the library's log lines."""
        self._lib.lib.sqz_ctx_set_log_rank(self._handle(), int(rank))

    def params(self):
        """Every parameter (core and each compressor's), in table order, as dicts: owner, name
        (without SQZ_), env (with it), type, default, current, source ("default", "env", "api" or
        "file PATH:LINE"), help, min, max (None for types without bounds), choices (enum only, a list)."""
        out = []
        errors = []

        def visit(_arg, owner, d, current, source):
            try:
                p = d.contents
                bounded = p.type in (_lib.SQZ_PARAM_INT, _lib.SQZ_PARAM_DOUBLE, _lib.SQZ_PARAM_SIZE)
                name = _decode(p.name)
                out.append({
                    "owner": _decode(owner),
                    "name": name,
                    "env": "SQZ_" + name,
                    "type": _lib.PARAM_TYPE_NAMES.get(p.type, str(p.type)),
                    "default": _decode(p.default_value),
                    "current": _decode(current),
                    "source": _decode(source),
                    "help": _decode(p.help),
                    "min": p.min if bounded else None,
                    "max": p.max if bounded else None,
                    "choices": (_decode(p.choices).split("|")
                                if p.type == _lib.SQZ_PARAM_ENUM and p.choices else None),
                })
            except Exception as e:  # exceptions cannot cross the C frame: report them after
                errors.append(e)

        cb = _lib.PARAM_VISIT_FN(visit)
        self._lib.lib.sqz_ctx_visit_params(self._handle(), cb, None)
        if errors:
            raise errors[0]
        return out

    def param(self, name):
        """The dict of one parameter (name with or without SQZ_), or KeyError."""
        key = name.upper()
        if key.startswith("SQZ_"):
            key = key[4:]
        for p in self.params():
            if p["name"] == key:
                return p
        raise KeyError(name)

    def compressors(self):
        """Every registered compressor as dicts: name, description, exchange, origin ("built-in"
        or the plugin's path), abi, params (their names)."""
        out = []
        errors = []

        def visit(_arg, c, origin):
            try:
                d = c.contents
                names = [_decode(d.params[i].name) for i in range(d.nparams)] if d.params else []
                out.append({
                    "name": _decode(d.name),
                    "description": _decode(d.description),
                    "exchange": _lib.EXCHANGE_NAMES.get(d.exchange, str(d.exchange)),
                    "origin": _decode(origin),
                    "abi": int(d.abi),
                    "params": names,
                })
            except Exception as e:
                errors.append(e)

        cb = _lib.COMPRESSOR_VISIT_FN(visit)
        self._lib.lib.sqz_ctx_visit_compressors(self._handle(), cb, None)
        if errors:
            raise errors[0]
        return out

    def settings_digest(self):
        """(text, hash): the canonical settings that must agree across ranks and their hash."""
        buf = ctypes.create_string_buffer(1 << 16)
        h = ctypes.c_uint64()
        check(self._lib.lib.sqz_ctx_settings_digest(self._handle(), buf, len(buf), ctypes.byref(h)),
              "sqz_ctx_settings_digest")
        return buf.value.decode("utf-8", "replace"), int(h.value)

    def stats(self):
        """The context-wide totals (sqz_stats_get) as a dict, plus rel_error (the mean of
        rel_error_sum over the compressed calls)."""
        s = _lib.sqz_stats_t()
        self._lib.lib.sqz_stats_get(self._handle(), ctypes.byref(s))
        d = {name: getattr(s, name) for name, _ in _lib.sqz_stats_t._fields_}
        for name in d:
            d[name] = float(d[name]) if isinstance(d[name], float) else int(d[name])
        d["rel_error"] = d["rel_error_sum"] / d["calls_compressed"] if d["calls_compressed"] else 0.0
        return d

    def stats_json(self, rank=0):
        """The stats JSON (sqz_stats_json) parsed into a dict: everything stats() has, per method
        and exchange, and under SQZ_ADAPT the "adapt" records (the per-layer levels chosen for
        each buffer size, with the error budget and the bytes against the uniform setting)."""
        fn = getattr(self._lib.lib, "sqz_stats_json", None)
        if fn is None:
            raise SqueezeError(_lib.SQZ_ERR_NOT_SUPPORTED, "this libsqueeze has no sqz_stats_json")
        n = fn(self._handle(), int(rank), None, 0)
        buf = ctypes.create_string_buffer(n + 1)
        fn(self._handle(), int(rank), buf, n + 1)
        return json.loads(buf.value.decode("utf-8", "replace"))

    def write_stats_json(self, path, rank=0):
        """sqz_stats_write_json: one JSON file ("%r" in path becomes the rank)."""
        check(self._lib.lib.sqz_stats_write_json(self._handle(), cstr(path), int(rank)),
              f"writing the stats to {path}")

    # -- communicators -----------------------------------------------------------------------
    def nccl_comm(self, nccl_comm):
        """A Comm over an existing NCCL communicator (an ncclComm_t, as an int address, e.g. from
        squeeze.nccl.comm_init).  Collective over the communicator's ranks (the settings are
        compared).  The NCCL communicator stays the caller's: destroy it after the Comm."""
        if not nccl_comm:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "nccl_comm is NULL")
        fn = self._lib.fn("sqz_comm_create_nccl")
        out = ctypes.c_void_p()
        check(fn(self._handle(), ctypes.c_void_p(int(nccl_comm)), ctypes.byref(out)),
              "sqz_comm_create_nccl")
        comm = Comm(self, out.value)
        comm.on_device = True
        self._adopt(comm)
        return comm

    def mpi_comm(self, mpi_comm, hierarchical=False):
        """A Comm over an mpi4py communicator (host memory; the transport's callbacks call
        mpi4py, point-to-point messages on a private duplicate).  Collective over its ranks.  The
        Comm keeps the mpi4py communicator (Comm.mpi) for the callers' own count exchanges.

        hierarchical=True, on a communicator that spans several hosts of the same number (> 1)
        of ranks (hosts: the HOST_ID parameter, else the hostname): all-reduces run as
        sqz_comm_create_hier's (a dense reduce-scatter inside the host, each rank's shard
        compressed between hosts, a dense all-gather), and reduce_scatter_block gives rank r
        (ranks host-major: host r // L, local rank r % L) its block, each rank compressing only
        its column of blocks between hosts.  Elsewhere the Comm is flat.  Comm.block_rank is the
        block this rank receives from reduce_scatter_block (host-major on a hierarchical Comm)."""
        from ._mpi import host_split, mpi_transport
        split = host_split(mpi_comm, self.param("HOST_ID")["current"]) if hierarchical else None
        out = ctypes.c_void_p()
        if split is None:
            t, keep = mpi_transport(mpi_comm)
            check(self._lib.lib.sqz_comm_create(self._handle(), ctypes.byref(t),
                                                ctypes.byref(out)), "sqz_comm_create")
            keepalive = (t, keep)
        else:
            (lt, lkeep), (it, ikeep) = (mpi_transport(c) for c in split)
            check(self._lib.lib.sqz_comm_create_hier(self._handle(), ctypes.byref(lt),
                                                     ctypes.byref(it), ctypes.byref(out)),
                  "sqz_comm_create_hier")
            keepalive = (lt, lkeep, it, ikeep, split)
        comm = Comm(self, out.value, keepalive=keepalive)
        comm.mpi = mpi_comm
        # The block reduce_scatter_block gives this rank: its MPI rank, or host x L + local rank.
        comm.block_rank = (mpi_comm.Get_rank() if split is None else
                           split[1].Get_rank() * split[0].Get_size() + split[0].Get_rank())
        self._adopt(comm)
        return comm

    def moe_stats(self, codec):
        """sqz_moe_stats_get: the totals of one codec ("exact", "dedup", "lsh" or SQZ_MOE_*) of
        this process's token all-to-alls, as a dict."""
        from .moe import codec_code
        st = _lib.sqz_moe_stats_t()
        self._lib.fn("sqz_moe_stats_get")(self._handle(), codec_code(codec), ctypes.byref(st))
        return {name: getattr(st, name) for name, _ in st._fields_}

    def single_rank_comm(self):
        """A Comm of one rank over a transport made of ctypes callbacks (host memory): the
        engine's whole path (policy, compression, error feedback, stats, layouts) without MPI,
        NCCL or a GPU, for tests and for trying methods on a buffer."""
        keep = _single_rank_transport()
        out = ctypes.c_void_p()
        check(self._lib.lib.sqz_comm_create(self._handle(), ctypes.byref(keep[0]),
                                            ctypes.byref(out)),
              "sqz_comm_create")
        comm = Comm(self, out.value, keepalive=keep)
        self._adopt(comm)
        return comm


class _RankGroup(_Closing):
    """What LocalGroup and DeviceGroup share: one Comm per rank in self.comms, run on threads."""

    def run(self, fn):
        """Calls fn(rank, comm) on one thread per rank and returns their results in rank order;
        re-raises the first exception.  (A rank that fails leaves the others waiting at the next
        collective: fn should fail on every rank alike, as bad arguments do.)"""
        return _on_threads(self.nranks, lambda r: fn(r, self.comms[r]))


class LocalGroup(_RankGroup):
    """W ranks in one process (sqz_local_group): one Context and one Comm per rank, over an
    in-process transport whose collectives meet at a barrier, for simulations of W workers and
    for tests.  Each rank's calls must come from its own thread (run() starts them):

        with squeeze.LocalGroup(4, method="sign") as g:
            g.run(lambda rank, comm: comm.ef_allreduce(bufs[rank], n, "float32", key=7))

    Keyword parameters are Context's (env=False by default: a simulation should not pick up the
    job's SQZ_* settings unless asked)."""

    def __init__(self, nranks, env=False, **params):
        self._lib = _lib.load()
        fn = self._lib.fn("sqz_local_group_create")
        ptr = ctypes.c_void_p()
        check(fn(int(nranks), ctypes.byref(ptr)), f"sqz_local_group_create({nranks})")
        self._ptr = ptr.value
        self.nranks = int(nranks)
        self.contexts, self.comms = [], []
        try:
            for r in range(self.nranks):
                ctx = Context(env=env, log_rank=r, **params)
                t = _lib.sqz_transport_t()
                check(self._lib.fn("sqz_local_group_transport")(self._ptr, r, ctypes.byref(t)),
                      "sqz_local_group_transport")
                out = ctypes.c_void_p()
                check(self._lib.lib.sqz_comm_create(ctx._handle(), ctypes.byref(t),
                                                    ctypes.byref(out)), "sqz_comm_create")
                comm = Comm(ctx, out.value, keepalive=(t, self))
                ctx._adopt(comm)
                self.contexts.append(ctx)
                self.comms.append(comm)
        except BaseException:
            self.close()
            raise


    def close(self):
        """Closes every rank's Comm and Context, then the group.  Idempotent."""
        for ctx in self.contexts:
            ctx.close()
        self.contexts, self.comms = [], []
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._lib.fn("sqz_local_group_destroy")(ptr)


def _on_threads(nranks, fn):
    """fn(rank) on one thread per rank; the results in rank order; the first exception
    re-raised.  (ctypes releases the GIL in library calls, so the ranks' collectives meet.)"""
    results, errors = [None] * nranks, [None] * nranks

    def main(r):
        try:
            results[r] = fn(r)
        except BaseException as e:  # noqa: B902 (re-raised below)
            errors[r] = e

    threads = [threading.Thread(target=main, args=(r,)) for r in range(nranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results


class DeviceGroup(_RankGroup):
    """W ranks in one process on one GPU (sqz_device_group): the device counterpart of
    LocalGroup, for simulations of W workers on one device and for tests.  One Context and one
    Comm per rank over the device thread transport; each rank's calls come from its own thread
    with its own CUDA stream (run() starts the threads):

        with squeeze.DeviceGroup(4, method="quant", quant_bits=4) as g:
            streams = [torch.cuda.Stream() for _ in range(4)]
            g.run(lambda r, comm: comm.allreduce_async(t[r].data_ptr(), n, "float32",
                                                       stream_ptr=streams[r].cuda_stream))

    Needs a library built with CUDA and a device (not NCCL).  Keyword parameters are Context's
    (env=False by default).  Creating the Comms is collective (the settings are compared): they
    are made on one thread per rank."""

    def __init__(self, nranks, device=0, env=False, **params):
        self._lib = _lib.load()
        ptr = ctypes.c_void_p()
        check(self._lib.fn("sqz_device_group_create")(int(nranks), int(device), ctypes.byref(ptr)),
              f"sqz_device_group_create({nranks}, {device})")
        self._ptr = ptr.value
        self.nranks = int(nranks)
        self.contexts = [Context(env=env, log_rank=r, **params) for r in range(self.nranks)]
        self.comms = []
        try:
            self.comms = _on_threads(self.nranks, self._make_comm)
        except BaseException:
            self.close()
            raise

    def _make_comm(self, rank):
        ctx = self.contexts[rank]
        out = ctypes.c_void_p()
        check(self._lib.fn("sqz_comm_create_device_group")(ctx._handle(), self._ptr, rank,
                                                           ctypes.byref(out)),
              "sqz_comm_create_device_group")
        comm = Comm(ctx, out.value, keepalive=self)
        comm.on_device = True
        ctx._adopt(comm)
        return comm

    def close(self):
        """Closes every rank's Comm and Context, then the group (the caller makes sure no work
        of theirs is still running on a stream).  Idempotent."""
        for ctx in getattr(self, "contexts", []):
            ctx.close()
        self.contexts, self.comms = [], []
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr:
            self._lib.fn("sqz_device_group_destroy")(ptr)


def _single_rank_transport():
    """(sqz_transport_t, callbacks...) of a one-rank group: every collective is a copy."""
    memmove = ctypes.memmove

    def allgatherv(_self, sendbuf, sendbytes, recvbuf, _recvbytes, displs):
        try:
            if sendbytes:
                memmove(recvbuf + displs[0], sendbuf, sendbytes)
            return 0
        except Exception:
            return 1

    def alltoallv(_self, sendbuf, sendbytes, sdispls, recvbuf, _recvbytes, rdispls):
        try:
            if sendbytes[0]:
                memmove(recvbuf + rdispls[0], sendbuf + sdispls[0], sendbytes[0])
            return 0
        except Exception:
            return 1

    def allreduce(_self, inbuf, outbuf, n):
        try:
            if n and inbuf != outbuf:
                memmove(outbuf, inbuf, 4 * n)
            return 0
        except Exception:
            return 1

    cbs = (_lib.TRANSPORT_ALLGATHERV_FN(allgatherv), _lib.TRANSPORT_ALLTOALLV_FN(alltoallv),
           _lib.TRANSPORT_ALLREDUCE_FN(allreduce))
    t = _lib.sqz_transport_t()
    t.size = ctypes.sizeof(_lib.sqz_transport_t)
    t.self = None
    t.rank = 0
    t.nranks = 1
    t.allgatherv, t.alltoallv, t.allreduce_f32_sum = cbs
    return (t,) + cbs


class Comm(_Closing):
    """One engine (buffer states, error-feedback residuals, workspaces) over a communicator.
    Made by Context.nccl_comm(); keeps its Context alive; close() (or the Context's close())
    frees it."""

    def __init__(self, ctx, ptr, keepalive=None):
        self._ctx = ctx
        self._lib = ctx._lib
        self._ptr = ptr
        self._keepalive = keepalive  # a transport and its callbacks, which must outlive the engine
        self.on_device = False  # True for an NCCL Comm: its buffers are device memory

    def _handle(self):
        if not self._ptr:
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "the Comm is closed")
        return self._ptr

    @property
    def context(self):
        return self._ctx

    @property
    def closed(self):
        return not self._ptr

    def close(self):
        """sqz_comm_destroy.  The caller makes sure no work of this Comm is still running on a
        stream (e.g. torch.cuda.synchronize()).  Idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._lib.lib.sqz_comm_destroy(ptr)

    def allreduce_async(self, tensor_ptr, count, dtype, op=_lib.SQZ_OP_SUM, key=0, stream_ptr=0,
                        sendbuf=None):
        """sqz_allreduce_async on device memory: `count` elements of `dtype` at address
        `tensor_ptr` (in place unless `sendbuf`, another device address, is given), enqueued on
        the CUDA stream `stream_ptr` (an int cudaStream_t; 0 is the legacy default stream).
        `key` names the buffer's error-feedback state (0: derived from the address and count).
        Returns at once; the result is ready in stream order."""
        fn = self._lib.fn("sqz_allreduce_async")
        check(fn(self._handle(), _ptr(sendbuf), _ptr(tensor_ptr), int(count), dtype_code(dtype),
                 op_code(op), int(key) & _U64, _ptr(stream_ptr)),
              "sqz_allreduce_async")

    def reduce_scatter_async(self, recvbuf, recvcount, dtype, op=_lib.SQZ_OP_SUM, key=0,
                             stream_ptr=0, sendbuf=None):
        """sqz_reduce_scatter_async on device memory: rank r receives elements
        [r * recvcount, (r + 1) * recvcount) of the reduction, at `recvbuf`.  sendbuf (nranks *
        recvcount elements) None means in place (the input is at recvbuf, the result lands in its
        first recvcount elements).  Enqueued on `stream_ptr`; returns at once."""
        fn = self._lib.fn("sqz_reduce_scatter_async")
        check(fn(self._handle(), _ptr(sendbuf), _ptr(recvbuf), int(recvcount), dtype_code(dtype),
                 op_code(op), int(key) & _U64, _ptr(stream_ptr)),
              "sqz_reduce_scatter_async")

    def reduce_scatter_block(self, recvbuf, recvcount, dtype, op=_lib.SQZ_OP_SUM, key=0,
                             sendbuf=None):
        """sqz_reduce_scatter_block on host memory (blocking); arguments as
        reduce_scatter_async."""
        check(self._lib.lib.sqz_reduce_scatter_block(
            self._handle(), _ptr(sendbuf), _ptr(recvbuf), int(recvcount), dtype_code(dtype),
            op_code(op), int(key) & _U64), "sqz_reduce_scatter_block")

    def allreduce(self, recvbuf, count, dtype, op=_lib.SQZ_OP_SUM, key=0, sendbuf=None):
        """sqz_allreduce on host memory (blocking): `count` elements of `dtype` at address
        `recvbuf` (in place unless `sendbuf` is given).  Addresses are ints, e.g.
        ctypes.addressof(array) or numpy's arr.ctypes.data."""
        check(self._lib.lib.sqz_allreduce(self._handle(), _ptr(sendbuf), _ptr(recvbuf), int(count),
                                          dtype_code(dtype), op_code(op), int(key) & _U64),
              "sqz_allreduce")

    def ef_allreduce(self, buf, count, dtype, op=_lib.SQZ_OP_AVG, key=1, stream_ptr=None):
        """sqz_ef_allreduce: the optimizer-side compressed all-reduce, in place, of `count`
        elements of `dtype` at address `buf` (1-bit Adam's momentum), with two-level error
        feedback kept under `key` (not 0, the same on every rank) whatever SQZ_EF, SQZ_MIN_BYTES
        and SQZ_WARMUP_STEPS say.  Host memory (blocking) on a host Comm; device memory enqueued
        on the CUDA stream `stream_ptr` (None or 0: the legacy default stream) on an NCCL Comm."""
        fn = self._lib.fn("sqz_ef_allreduce")
        check(fn(self._handle(), _ptr(buf), int(count), dtype_code(dtype), op_code(op),
                 int(key) & _U64, _ptr(stream_ptr)),
              f"sqz_ef_allreduce(key={int(key) & _U64:#x}, count={int(count)})")

    def ef_forget(self, key):
        """sqz_ef_forget: drops the error-feedback state named `key` (every rank, same point)."""
        self._lib.fn("sqz_ef_forget")(self._handle(), int(key) & _U64)

    def eligible(self, count, dtype, op=_lib.SQZ_OP_SUM):
        """True when a call with these arguments would be compressed."""
        return bool(self._lib.lib.sqz_comm_eligible(self._handle(), int(count), dtype_code(dtype),
                                                   op_code(op)))

    def state_dict(self):
        """sqz_state_save: this rank's error-feedback state of the Comm as a dict holding the
        versioned checkpoint bytes (see Context.state_dict())."""
        fn = self._lib.fn("sqz_state_save")
        n = int(fn(self._handle(), None, 0))
        if n == 0:
            raise SqueezeError(_lib.SQZ_ERR_INTERNAL, "sqz_state_save failed (see the log)")
        buf = ctypes.create_string_buffer(n)
        if int(fn(self._handle(), buf, n)) != n:
            raise SqueezeError(_lib.SQZ_ERR_INTERNAL, "sqz_state_save changed size")
        return {"format": "squeeze-comm-state", "version": 1, "state": buf.raw}

    def load_state_dict(self, state):
        """sqz_state_load of a state_dict() of this Comm's rank (same method and settings)."""
        if not isinstance(state, dict) or state.get("format") != "squeeze-comm-state":
            raise SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, "not a squeeze Comm state_dict")
        data = bytes(state["state"])
        check(self._lib.fn("sqz_state_load")(self._handle(), data, len(data)), "sqz_state_load")

    def register_layout(self, key, count, layers):
        """Records what the buffer `key` of `count` elements holds: layers is a sequence of
        (offset, rows, cols) or (offset, rows, cols, id), sorted by offset, non-overlapping,
        inside [0, count).  id (default 0: unknown) names the parameter, the same on every rank:
        a new buffer takes over the error-feedback residual of its layers from the buffer that
        held them before (DDP's bucket rebuild)."""
        fn = self._lib.fn("sqz_layout_register")
        layers = list(layers)
        arr = (_lib.sqz_layer_t * max(1, len(layers)))()
        for i, layer in enumerate(layers):
            off, rows, cols = layer[:3]
            arr[i].offset, arr[i].rows, arr[i].cols = int(off), int(rows), int(cols)
            arr[i].id = (int(layer[3]) & _U64) if len(layer) > 3 else 0
        check(fn(self._handle(), int(key) & _U64, int(count), arr, len(layers)),
              f"sqz_layout_register(key={int(key) & _U64:#x}, count={int(count)}, "
              f"{len(layers)} layers)")

    def layout(self, key, count):
        """The layers registered for (key, count) as a list of (offset, rows, cols), or of
        (offset, rows, cols, id) for layers registered with an id; [] if none."""
        fn = self._lib.fn("sqz_layout_get")
        h = self._handle()
        n = int(fn(h, int(key) & _U64, int(count), None, 0))
        if n == 0:
            return []
        arr = (_lib.sqz_layer_t * n)()
        n = min(n, int(fn(h, int(key) & _U64, int(count), arr, n)))
        return [(int(arr[i].offset), int(arr[i].rows), int(arr[i].cols))
                + ((int(arr[i].id),) if arr[i].id else ()) for i in range(n)]

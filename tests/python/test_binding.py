"""Tests of the Python binding (python/squeeze) that need neither PyTorch nor a GPU.

Loads libsqueeze.so from SQUEEZE_LIB (the test runner points it at the build tree) and checks
contexts, parameters, errors, stats, the one-rank communicator and the NCCL entry points' clean
failure without a GPU.  One line per check (PASS / FAIL / SKIP); exit 0 when none failed, 1
otherwise.
"""
import ctypes
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if "squeeze" not in sys.modules:
    # Run from a source tree without PYTHONPATH: use the tree's python/ folder.
    sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..", "python")))

# Hermetic: no SQZ_* variable of the caller leaks into the contexts made here.
for _k in [k for k in os.environ if k.startswith("SQZ_")]:
    del os.environ[_k]

import squeeze  # noqa: E402
from squeeze import SqueezeError  # noqa: E402

failures = 0


def report(ok, name, detail=""):
    global failures
    if ok is None:
        print(f"SKIP {name}" + (f": {detail}" if detail else ""), flush=True)
        return
    if not ok:
        failures += 1
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)


def raises(fn, status=None, contains=None):
    """(ok, detail): fn() raised SqueezeError [with this status] [whose text holds `contains`]."""
    try:
        fn()
    except SqueezeError as e:
        if status is not None and e.status != status:
            return False, f"status {e.status}, expected {status}: {e}"
        if contains is not None and contains not in str(e):
            return False, f"message lacks {contains!r}: {e}"
        return True, str(e)
    except Exception as e:  # any other exception is a failure of the binding
        return False, f"{type(e).__name__} instead of SqueezeError: {e}"
    return False, "no exception"


def env_set(**kv):
    for k, v in kv.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def check(name, fn):
    """Runs one check; an unexpected exception is a FAIL of that check, not of the run."""
    try:
        fn()
    except Exception as e:
        report(False, name, f"unexpected {type(e).__name__}: {e}")


# -------------------------------------------------------------------------------------------------
def t_import_without_library():
    # A missing library must not break `import squeeze`; the first call raises SqueezeError
    # naming what was tried.
    code = ("import squeeze\n"
            "try:\n"
            "    squeeze.version()\n"
            "except squeeze.SqueezeError as e:\n"
            "    print('ERR', e.status, e)\n")
    env = dict(os.environ, SQUEEZE_LIB="/nonexistent/libsqueeze.so",
               PYTHONPATH=os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(
                   os.path.abspath(squeeze.__file__))), os.environ.get("PYTHONPATH", "")] if p))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    out = r.stdout.strip()
    ok = (r.returncode == 0 and out.startswith("ERR") and "/nonexistent/libsqueeze.so" in out)
    report(ok, "missing library: import works, first call raises SqueezeError naming the path",
           out or r.stderr.strip()[-300:])


def t_version():
    v = squeeze.version()
    ok = isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, int) for x in v)
    detail = f"{squeeze.version_string()} from {squeeze.library_path()}"
    hdr = os.path.join(os.environ.get("top_srcdir", os.path.join(HERE, "..", "..")),
                       "include", "squeeze.h")
    if ok and os.path.exists(hdr):
        text = open(hdr).read()
        want = tuple(int(re.search(r"#define SQZ_VERSION_%s (\d+)" % part, text).group(1))
                     for part in ("MAJOR", "MINOR", "PATCH"))
        ok = v == want
        detail += f" (squeeze.h says {'%d.%d.%d' % want})"
    report(ok, "version()", detail)


def t_gpu_built():
    g = squeeze.gpu_built()
    report(isinstance(g, bool), "gpu_built() returns a bool", repr(g))


def t_default_context():
    with squeeze.Context() as ctx:
        report(ctx.method == "none", "Context(): method defaults to none", ctx.method)
        s = ctx.stats()
        zero = all(v == 0 for v in s.values())
        keys = {"calls", "calls_compressed", "calls_fallback", "calls_warmup", "calls_nonfinite",
                "bytes_in", "bytes_wire", "seconds_compress", "seconds_comm", "rel_error"}
        report(zero and keys <= set(s), "stats() of a new context are all zero",
               ", ".join(f"{k}={s[k]}" for k in sorted(s)))


def t_params():
    with squeeze.Context(method="quant", quant_bits=3) as ctx:
        ps = ctx.params()
        byname = {p["env"]: p for p in ps}
        need = {"owner", "name", "env", "type", "default", "current", "source", "help"}
        report(all(need <= set(p) for p in ps) and len(ps) > 10,
               "params() lists dicts with owner, name, type, default, current, source, help",
               f"{len(ps)} parameters")
        m = byname.get("SQZ_METHOD")
        report(m is not None and m["default"] == "none" and m["current"] == "quant"
               and m["source"] == "api" and m["owner"] == "core",
               "params() lists SQZ_METHOD with its default", repr(m and {k: m[k] for k in (
                   "owner", "default", "current", "source")}))
        q = byname.get("SQZ_QUANT_BITS")
        report(q is not None and q["type"] == "int" and q["current"] == "3" and q["min"] == 1
               and q["max"] == 8 and q["owner"] == "quant",
               "params(): SQZ_QUANT_BITS is an int in [1, 8] set to 3 by the API",
               repr(q and {k: q[k] for k in ("owner", "type", "min", "max", "current")}))
        e = byname.get("SQZ_EF")
        report(e is not None and e["type"] == "enum" and "ef14" in (e["choices"] or []),
               "params(): SQZ_EF is an enum with its choices", repr(e and e["choices"]))
        report(ctx.param("sqz_quant_bits")["current"] == "3", "param() by name, any case")


def t_bad_values():
    ok, d = raises(lambda: squeeze.Context(quant_bits=99), squeeze.SQZ_ERR_INVALID_PARAM,
                   "SQZ_QUANT_BITS")
    report(ok, "bad keyword value raises SqueezeError naming SQZ_QUANT_BITS", d)
    ok, d = raises(lambda: squeeze.Context(topk_density="lots"), squeeze.SQZ_ERR_INVALID_PARAM,
                   "SQZ_TOPK_DENSITY")
    report(ok, "non-numeric value raises SqueezeError naming SQZ_TOPK_DENSITY", d)
    ok, d = raises(lambda: squeeze.Context(method="nosuchmethod"), squeeze.SQZ_ERR_INVALID_PARAM,
                   "SQZ_METHOD")
    report(ok, "unknown method raises SqueezeError naming SQZ_METHOD", d)
    env_set(SQZ_TOPK_DENSITY="2.5")
    try:
        ok, d = raises(lambda: squeeze.Context(), squeeze.SQZ_ERR_INVALID_PARAM,
                       "SQZ_TOPK_DENSITY")
        report(ok and "env" in d, "bad environment value raises SqueezeError naming the variable "
                                  "and its source", d)
        with squeeze.Context(env=False) as ctx:
            report(ctx.param("TOPK_DENSITY")["source"] == "default",
                   "env=False ignores the environment")
    finally:
        env_set(SQZ_TOPK_DENSITY=None)


def t_env_and_keywords():
    env_set(SQZ_METHOD="topk", SQZ_QUANT_BITS="2")
    try:
        with squeeze.Context() as ctx:
            report(ctx.method == "topk" and ctx.param("QUANT_BITS")["source"] == "env",
                   "SQZ_* environment variables are read", f"method {ctx.method}")
        with squeeze.Context(method="quant") as ctx:
            q = ctx.param("QUANT_BITS")
            m = ctx.param("METHOD")
            report(ctx.method == "quant" and m["source"] == "api" and q["current"] == "2"
                   and q["source"] == "env",
                   "keyword parameters override the environment, which still fills the rest",
                   f"method {ctx.method} ({m['source']}), QUANT_BITS {q['current']} "
                   f"({q['source']})")
        with squeeze.Context(SQZ_QUANT_BITS=6) as ctx:
            report(ctx.param("QUANT_BITS")["current"] == "6",
                   "keywords accept the SQZ_ prefix")
    finally:
        env_set(SQZ_METHOD=None, SQZ_QUANT_BITS=None)


def t_config_file():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sqz.conf")
        with open(path, "w") as f:
            f.write("# test\nMETHOD = quant\nSQZ_QUANT_BITS=3\n")
        with squeeze.Context(config_file=path, env=False) as ctx:
            q = ctx.param("QUANT_BITS")
            report(ctx.method == "quant" and q["current"] == "3"
                   and q["source"].startswith("file"),
                   "config_file is read", f"{ctx.method}, QUANT_BITS {q['current']} "
                                          f"({q['source']})")
        env_set(SQZ_QUANT_BITS="5")
        try:
            with squeeze.Context(config_file=path) as ctx:
                a = ctx.param("QUANT_BITS")["current"]
            with squeeze.Context(config_file=path, quant_bits=7) as ctx:
                b = ctx.param("QUANT_BITS")["current"]
            report(a == "5" and b == "7", "environment wins over the file, keywords over both",
                   f"env over file: {a}, keyword: {b}")
        finally:
            env_set(SQZ_QUANT_BITS=None)
        env_set(SQZ_CONFIG=os.path.join(d, "missing.conf"))
        try:
            ok, detail = raises(lambda: squeeze.Context(), squeeze.SQZ_ERR_IO)
            report(ok, "an unreadable SQZ_CONFIG raises SqueezeError (SQZ_ERR_IO)", detail)
        finally:
            env_set(SQZ_CONFIG=None)


def t_compressors():
    with squeeze.Context() as ctx:
        cs = {c["name"]: c for c in ctx.compressors()}
        ok = {"none", "topk", "quant", "sign"} <= set(cs) and all(
            c["origin"] == "built-in" and c["description"] and c["abi"] == 1
            for n, c in cs.items() if n in ("none", "topk", "quant", "sign"))
        report(ok and "QUANT_BITS" in cs.get("quant", {}).get("params", []),
               "compressors() lists the built-ins with description, origin and parameters",
               " ".join(sorted(cs)))


def t_stats_json():
    with tempfile.TemporaryDirectory() as d, squeeze.Context(method="quant") as ctx:
        ctx.write_stats_json(os.path.join(d, "s-%r.json"), rank=3)
        path = os.path.join(d, "s-3.json")
        ok = os.path.exists(path)
        detail = path
        if ok:
            js = json.load(open(path))
            ok = js.get("calls") == 0 and js.get("method") == "quant" and js.get("rank") == 3
            detail = json.dumps({k: js.get(k) for k in ("rank", "method", "calls")})
        report(ok, "write_stats_json() writes the rank's JSON (%r replaced)", detail)
        ok, d2 = raises(lambda: ctx.write_stats_json(os.path.join(d, "no", "such", "dir.json")))
        report(ok, "write_stats_json() to an unwritable path raises SqueezeError", d2)


def t_lifecycle():
    ctx = squeeze.Context(method="topk")
    digest1 = ctx.settings_digest()
    with squeeze.Context(method="topk") as same, squeeze.Context(method="topk",
                                                                 topk_density=0.5) as other:
        report(digest1[1] == same.settings_digest()[1] != other.settings_digest()[1]
               and "SQZ_METHOD=topk" in digest1[0],
               "settings_digest(): equal for equal settings, different otherwise")
    ctx.close()
    ctx.close()
    ok, d = raises(lambda: ctx.stats())
    report(ok and ctx.closed, "close() is idempotent; a closed context raises SqueezeError", d)
    # Dropped without close(), with a live communicator: __del__ must not crash.
    c2 = squeeze.Context(method="quant")
    comm = c2.single_rank_comm()
    del c2
    gc.collect()
    report(not comm.closed, "a Comm keeps its Context alive")
    del comm
    gc.collect()
    report(True, "contexts and comms dropped without close() are freed safely")


def t_enums():
    ok = (squeeze.dtype_code("float32") == squeeze.SQZ_DTYPE_FLOAT32 == 1
          and squeeze.dtype_code("torch.float16") == squeeze.SQZ_DTYPE_FLOAT16 == 2
          and squeeze.dtype_code("bf16") == squeeze.SQZ_DTYPE_BFLOAT16 == 3
          and squeeze.op_code("sum") == squeeze.SQZ_OP_SUM == 1
          and squeeze.op_code("AVG") == squeeze.SQZ_OP_AVG == 2)
    bad1, _ = raises(lambda: squeeze.dtype_code("float64"), squeeze.SQZ_ERR_INVALID_PARAM)
    bad2, _ = raises(lambda: squeeze.op_code("max"), squeeze.SQZ_ERR_INVALID_PARAM)
    report(ok and bad1 and bad2, "dtype and op codes match squeeze.h; others raise")
    s = squeeze.status_string(squeeze.SQZ_ERR_INVALID_PARAM)
    e = SqueezeError(squeeze.SQZ_ERR_MISMATCH, "x")
    report(bool(s) and e.status == -9 and "x" in str(e),
           "status_string() and SqueezeError(status, message)", f"{s!r}; {e}")


def t_single_rank_comm():
    n = 1 << 14
    src = [math.sin(0.37 * i) + 0.25 * math.cos(0.011 * i) for i in range(n)]
    with squeeze.Context(method="quant", quant_bits=4, min_bytes=1024) as ctx:
        comm = ctx.single_rank_comm()
        a = (ctypes.c_float * n)(*src)
        report(comm.eligible(n, "float32", "sum") and not comm.eligible(16, "float32", "sum"),
               "Comm.eligible() follows SQZ_MIN_BYTES")
        comm.allreduce(ctypes.addressof(a), n, "float32", "sum", key=1)
        num = sum((a[i] - src[i]) ** 2 for i in range(n))
        den = sum(x * x for x in src)
        rel = math.sqrt(num / den)
        s = ctx.stats()
        report(0 < rel < 0.15 and s["calls_compressed"] == 1 and s["bytes_wire"] < s["bytes_in"],
               "one-rank Comm.allreduce() compresses (4-bit quant)",
               f"rel_err {rel:.4f}, bytes {s['bytes_in']} -> {s['bytes_wire']}")
        b = (ctypes.c_float * 16)(*range(16))
        comm.allreduce(ctypes.addressof(b), 16, "float32", "sum", key=2)
        report(list(b) == [float(i) for i in range(16)] and ctx.stats()["calls"] == 2,
               "a call below SQZ_MIN_BYTES passes through exactly")
        if not ctx._lib.has("sqz_layout_register"):
            report(None, "register_layout()/layout()",
                   "this libsqueeze has no sqz_layout_register")
        else:
            layers = [(0, 64, 128), (8192, 8192, 1)]
            comm.register_layout(5, n, layers)
            got = comm.layout(5, n)
            report(got == layers and comm.layout(5, n + 1) == [] and comm.layout(6, n) == [],
                   "register_layout() then layout() round-trips", repr(got))
            ok, d = raises(lambda: comm.register_layout(5, n, [(0, 64, 128), (100, 10, 10)]),
                           squeeze.SQZ_ERR_INVALID_PARAM)
            report(ok, "overlapping layers raise SqueezeError", d)
            ok, d = raises(lambda: comm.register_layout(5, n, [(n - 1, 2, 1)]),
                           squeeze.SQZ_ERR_INVALID_PARAM)
            report(ok, "a layer past the end raises SqueezeError", d)
        comm.close()
        comm.close()
        ok, d = raises(lambda: comm.eligible(n, "float32"))
        report(ok, "a closed Comm raises SqueezeError", d)


def t_state_dict():
    """Context.state_dict() / load_state_dict(): a one-rank job stopped after 3 calls and restarted
    from its state continues with the same bits; a state of another method is refused."""
    n = 1 << 14
    src = [math.sin(0.37 * i) + 0.25 * math.cos(0.011 * i) for i in range(n)]

    def steps(comm, first, last):
        out, a = [], (ctypes.c_float * n)()
        for step in range(first, last):
            a[:] = [x * (1 + 0.1 * step) for x in src]
            comm.allreduce(ctypes.addressof(a), n, "float32", "sum")
            out.append(bytes(a))
        return out

    params = dict(env=False, method="quant", quant_bits=2, min_bytes=1024)
    with squeeze.Context(**params) as ctx:
        whole = steps(ctx.single_rank_comm(), 0, 6)
    with squeeze.Context(**params) as ctx:
        comm = ctx.single_rank_comm()
        steps(comm, 0, 3)
        state = ctx.state_dict()
    with squeeze.Context(**params) as ctx:
        comm = ctx.single_rank_comm()
        ctx.load_state_dict(state)
        resumed = steps(comm, 3, 6)
    report(resumed == whole[3:] and len(state["comms"]) == 1,
           "Context.state_dict() then load_state_dict(): the restarted job continues bit for bit",
           f"{len(state['comms'][0]['state'])} bytes of state")
    with squeeze.Context(env=False, method="sign", min_bytes=1024) as ctx:
        comm = ctx.single_rank_comm()
        ok, d = raises(lambda: ctx.load_state_dict(state), squeeze.SQZ_ERR_INVALID_PARAM)
        report(ok, "a state of another method raises SqueezeError", d)
        ok, d = raises(lambda: ctx.load_state_dict({"format": "x"}), squeeze.SQZ_ERR_INVALID_PARAM)
        report(ok, "a dict that is no state raises SqueezeError", d)


def t_adapt_stats_json():
    """SQZ_ADAPT=lgreco on a one-rank PowerSGD Comm with a registered layout: the per-layer choice
    is readable through Context.stats_json() ("adapt"), within its error budget."""
    with squeeze.Context(env=False, method="powersgd", powersgd_start_steps=0, adapt="lgreco",
                         adapt_period=2, min_bytes=0) as ctx:
        if not ctx._lib.has("sqz_stats_json") or not ctx._lib.has("sqz_layout_register"):
            report(None, "stats_json() adapt record", "this libsqueeze lacks sqz_stats_json")
            return
        comm = ctx.single_rank_comm()
        rows, cols = 64, 48
        n = 2 * rows * cols
        comm.register_layout(9, n, [(0, rows, cols), (rows * cols, rows, cols)])
        # Layer 0 of rank 1, layer 1 full rank: the choice lowers layer 0's rank.
        u = [math.sin(0.37 * i + 1) for i in range(rows)]
        v = [math.cos(0.11 * j) for j in range(cols)]
        src = [u[i] * v[j] for i in range(rows) for j in range(cols)]
        src += [math.sin(12.9898 * k) * 43758.5453 % 1.0 - 0.5 for k in range(rows * cols)]
        for _ in range(4):
            a = (ctypes.c_float * n)(*src)
            comm.allreduce(ctypes.addressof(a), n, "float32", "sum", key=9)
        d = ctx.stats_json()
        rec = d.get("adapt", [])
        ok = len(rec) == 1 and rec[0]["count"] == n and len(rec[0]["levels"]) == 2
        report(ok, "stats_json() holds the adapt record of the buffer", repr(rec))
        if ok:
            r = rec[0]
            report(r["error"] <= r["budget"] and r["levels"][0] < r["levels"][1]
                   and r["bytes"] < r["bytes_uniform"],
                   "the choice lowers the rank-1 layer and stays within its error budget",
                   f"levels {r['levels']}, error {r['error']:.4g} <= {r['budget']:.4g}, "
                   f"bytes {r['bytes']:.0f} < {r['bytes_uniform']:.0f}")
        comm.close()


def t_nccl_unavailable():
    """Without a GPU build, NCCL or a GPU, the NCCL entry points raise SqueezeError, never crash.
    Where everything is present, a one-rank communicator is made and destroyed."""
    gpu = squeeze.gpu_built()
    have_device = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0"))
    uid = None
    try:
        uid = squeeze.nccl.get_unique_id()
        report(len(uid) == 128, "nccl.get_unique_id() returns 128 bytes", f"gpu_built={gpu}")
    except SqueezeError as e:
        report(True, "nccl.get_unique_id() raises SqueezeError without NCCL", f"gpu_built={gpu}: {e}")
    except Exception as e:
        report(False, "nccl.get_unique_id() raises SqueezeError without NCCL",
               f"{type(e).__name__}: {e}")
    # A group of one rank: ncclCommInitRank waits for nobody (with a made-up id only when NCCL is
    # not there at all, so that nothing can try to reach the address inside it).
    try:
        h = squeeze.nccl.comm_init(1, uid if uid is not None else bytes(128), 0)
    except SqueezeError as e:
        report(not have_device, "nccl.comm_init() raises SqueezeError without a usable GPU",
               f"{'a GPU device node exists, yet: ' if have_device else ''}{e}")
    except Exception as e:
        report(False, "nccl.comm_init() raises SqueezeError without a usable GPU",
               f"{type(e).__name__}: {e}")
    else:
        try:
            with squeeze.Context(method="quant") as ctx:
                comm = ctx.nccl_comm(h)
                comm.close()
            report(True, "one-rank NCCL communicator and Comm made and destroyed")
        except SqueezeError as e:
            report(False, "one-rank NCCL communicator and Comm made and destroyed", str(e))
        finally:
            squeeze.nccl.comm_destroy(h)
    with squeeze.Context() as ctx:
        ok, d = raises(lambda: ctx.nccl_comm(0), squeeze.SQZ_ERR_INVALID_PARAM)
        report(ok, "Context.nccl_comm(NULL) raises SqueezeError", d)
    ok, d = raises(lambda: squeeze.nccl.comm_init(2, b"short", 0), squeeze.SQZ_ERR_INVALID_PARAM)
    ok2, d2 = raises(lambda: squeeze.nccl.comm_init(2, bytes(128), 5),
                     squeeze.SQZ_ERR_INVALID_PARAM)
    report(ok and ok2, "nccl.comm_init() rejects a bad id or rank before calling NCCL",
           f"{d}; {d2}")
    try:
        squeeze.nccl.comm_destroy(0)
        squeeze.nccl.comm_destroy(None)
        report(True, "nccl.comm_destroy(0 / None) is a no-op")
    except Exception as e:
        report(False, "nccl.comm_destroy(0 / None) is a no-op", f"{type(e).__name__}: {e}")


def t_ddp_helpers():
    had_torch = "torch" in sys.modules
    import squeeze.ddp as ddp
    report(had_torch or "torch" not in sys.modules, "import squeeze.ddp does not import torch")
    k1 = ddp.bucket_key([3, 2, 1, 0])
    ok = (k1 == ddp.bucket_key([3, 2, 1, 0]) and k1 != ddp.bucket_key([0, 1, 2, 3])
          and 0 < k1 < 1 << 64 and ddp.bucket_key([]) != 0)
    # FNV-1a reference value: the 64-bit hash of "a" is 0xaf63dc4c8601ec8c.
    ok = ok and ddp.fnv1a64(b"a") == 0xaf63dc4c8601ec8c
    report(ok, "bucket keys: FNV-1a over parameter indices, order-sensitive, never 0",
           f"{k1:#018x}")
    layers, total = ddp.param_layers([(4, 3), (5,), (), (0, 7), (2, 3, 4)])
    want = [(0, 4, 3, 0), (12, 5, 1, 0), (17, 1, 1, 0), (18, 2, 12, 0)]
    report(layers == want and total == 42, "param_layers(): rows = shape[0], cols = the rest",
           repr(layers))
    layers, _ = ddp.param_layers([(4, 3), (5,)], [7, 3])
    report(layers == [(0, 4, 3, 7), (12, 5, 1, 3)], "param_layers(): ids = parameter indices",
           repr(layers))


def t_device_group_without_gpu():
    """squeeze.DeviceGroup: bad sizes are SQZ_ERR_INVALID_PARAM; without a GPU build or a device
    (this machine, CI) SQZ_ERR_NOT_SUPPORTED, a SqueezeError, never a crash or a hang."""
    have_device = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0"))
    for n, want in ((0, squeeze.SQZ_ERR_INVALID_PARAM), (5000, squeeze.SQZ_ERR_INVALID_PARAM)):
        try:
            squeeze.DeviceGroup(n).close()
            report(False, f"DeviceGroup({n}) raises", "it did not")
        except SqueezeError as e:
            report(e.status == want, f"DeviceGroup({n}) raises SQZ_ERR_INVALID_PARAM", str(e))
    if have_device and squeeze.gpu_built():
        report(True, "DeviceGroup without a GPU: not checked here (a device is present)")
        return
    try:
        squeeze.DeviceGroup(2, method="quant").close()
        report(False, "DeviceGroup(2) without a GPU raises", "it did not")
    except SqueezeError as e:
        report(e.status == squeeze.SQZ_ERR_NOT_SUPPORTED,
               "DeviceGroup(2) without a GPU raises SQZ_ERR_NOT_SUPPORTED", str(e))


def main():
    print(f"squeeze from {os.path.dirname(squeeze.__file__)}, SQUEEZE_LIB="
          f"{os.environ.get('SQUEEZE_LIB', '(unset)')}", flush=True)
    try:
        squeeze.version()
    except SqueezeError as e:
        print(f"FAIL cannot load libsqueeze: {e}")
        return 1
    for name, fn in [
        ("import without library", t_import_without_library),
        ("version", t_version),
        ("gpu_built", t_gpu_built),
        ("default context", t_default_context),
        ("params", t_params),
        ("bad values", t_bad_values),
        ("env and keywords", t_env_and_keywords),
        ("config file", t_config_file),
        ("compressors", t_compressors),
        ("stats json", t_stats_json),
        ("lifecycle", t_lifecycle),
        ("enums", t_enums),
        ("single-rank comm", t_single_rank_comm),
        ("adapt stats json", t_adapt_stats_json),
        ("state dict", t_state_dict),
        ("nccl unavailable", t_nccl_unavailable),
        ("device group without a GPU", t_device_group_without_gpu),
        ("ddp helpers", t_ddp_helpers),
    ]:
        check(name, fn)
    print(f"test_binding: {'FAILED, ' + str(failures) + ' check(s)' if failures else 'all passed'}",
          flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

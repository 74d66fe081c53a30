"""1-bit Adam and 0/1 Adam over Squeeze's compressed all-reduce (PyTorch optimizers).

Error feedback on the gradient keeps SGD's convergence but not Adam's: Adam divides by the root
of its variance, a non-linear function of the gradient, so the compression error that error
feedback re-injects later lands under another preconditioner.  1-bit Adam (Tang et al., ICML
2021) runs plain Adam for a warm-up, freezes the variance, and from then on all-reduces the
momentum, which is linear in the gradients, with sign compression and error feedback; 0/1 Adam
(Lu et al., ICLR 2023) updates the variance at exponentially spaced steps only, compresses the
gradient between them, and after the variance freezes takes local steps that it synchronizes,
compressed, at growing intervals.  The exchange is Squeeze's sqz_ef_allreduce (the two-phase
all-reduce with worker and server error feedback; SQZ_METHOD=sign gives 1-bit Adam's).

    ctx = squeeze.Context(method="sign")
    comm, handle = squeeze.ddp.create_nccl_comm(ctx)          # or ctx.mpi_comm(...) on the host
    opt = squeeze.optim.OneBitAdam(model.parameters(), comm, lr=1e-3, freeze_step=1000,
                                   weight_decay=0.01)
    squeeze.optim.register_ddp_hook(model, opt)               # DDP: skip the gradient all-reduce
    ... loss.backward(); opt.step() ...

Gradients.  The steps that need averaged gradients (1-bit Adam's warm-up, 0/1 Adam's variance
steps) get them from the caller: under DDP, register_ddp_hook(model, opt) makes DDP average the
gradients of those steps only and hand the others over unreduced; without DDP, pass
dense_allreduce=fn, which the optimizer calls on the list of gradients of those steps and which
must average them in place across ranks.  The other steps take each rank's own gradients.

Every rank ends each step with bit-identical parameters (0/1 Adam's local steps excepted: there
each rank moves on its own until the next synchronization, which makes them identical again).
The first steps are torch.optim.AdamW's own (1-bit Adam: every step up to freeze_step; 0/1 Adam:
the first var_update_scaler), so they match AdamW bit for bit; after them both keep AdamW's bias
corrections and decoupled weight decay.  state_dict() holds the stage, the counters and this
rank's error-feedback residuals (each rank saves its own): a run restarted from it continues bit
for bit.  A step whose exchange comes back non-finite (some rank's gradient holds NaN or Inf) is
skipped on every rank alike (counted in skipped_steps) and the residuals are kept.

torch is imported by this module.
"""
import math
import warnings

import torch

from . import _lib
from ._core import Comm
from ._lib import SqueezeError
from .ddp import fnv1a64

__all__ = ["OneBitAdam", "ZeroOneAdam", "register_ddp_hook", "TensorExchange"]


def _invalid(msg):
    return SqueezeError(_lib.SQZ_ERR_INVALID_PARAM, msg)


class TensorExchange:
    """The optimizers' view of a squeeze.Comm: in-place averaging of one contiguous tensor with
    error feedback named by key (sqz_ef_allreduce), on the tensor's device and current stream.
    Anything with the same four methods can stand in for it (bench/adam's one-GPU simulation
    does)."""

    def __init__(self, comm):
        if not isinstance(comm, Comm):
            raise _invalid(f"comm must be a squeeze.Comm (Context.nccl_comm, Context.mpi_comm, "
                           f"LocalGroup.comms), not {type(comm).__name__}")
        if comm.closed:
            raise _invalid("comm is closed")
        self.comm = comm

    def ef_allreduce_tensor(self, t, key):
        if t.is_cuda != self.comm.on_device:
            raise _invalid(f"a {'device' if t.is_cuda else 'host'} tensor on a "
                           f"{'device (NCCL)' if self.comm.on_device else 'host'} Comm: give "
                           f"the optimizer a Comm over the parameters' memory")
        stream = torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else None
        self.comm.ef_allreduce(t.data_ptr(), t.numel(), t.dtype, _lib.SQZ_OP_AVG, key, stream)

    def ef_forget(self, key):
        self.comm.ef_forget(key)

    def state_dict(self):
        return self.comm.state_dict()

    def load_state_dict(self, state):
        self.comm.load_state_dict(state)


def _exchange(comm):
    if hasattr(comm, "ef_allreduce_tensor"):
        return comm
    return TensorExchange(comm)


def _check_range(name, value, lo, hi=None, lo_open=False, hi_open=True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"{name}={value!r} is not a number") from None
    bad = (v <= lo if lo_open else v < lo) or (hi is not None and (v >= hi if hi_open else v > hi))
    if bad or math.isnan(v):
        lo_s = f"({lo}" if lo_open else f"[{lo}"
        hi_s = "inf)" if hi is None else (f"{hi})" if hi_open else f"{hi}]")
        raise _invalid(f"{name}={value!r} is outside {lo_s}, {hi_s}")
    return v


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _invalid(f"{name}={value!r} must be an integer >= {lo}")
    return value


class _CompressedAdam(torch.optim.Optimizer):
    """What 1-bit Adam and 0/1 Adam share: AdamW's warm-up steps (delegated to an AdamW over the
    same parameters and state), the frozen-variance update, the packing of one parameter group
    into a flat buffer for the exchange, the DDP hook's question (dense_step_next) and
    checkpoints."""

    _ALGORITHM = None

    def __init__(self, params, comm, lr, betas, eps, weight_decay, dense_allreduce,
                 precondition):
        if not isinstance(precondition, bool):
            raise _invalid(f"precondition={precondition!r} must be True or False")
        self.precondition = precondition
        _check_range("lr", lr, 0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise _invalid(f"betas={betas!r} must be a pair (beta1, beta2)")
        _check_range("betas[0]", betas[0], 0.0, 1.0)
        _check_range("betas[1]", betas[1], 0.0, 1.0)
        _check_range("eps", eps, 0.0)
        _check_range("weight_decay", weight_decay, 0.0)
        if dense_allreduce is not None and not callable(dense_allreduce):
            raise _invalid("dense_allreduce must be callable (a list of gradients, averaged in "
                           "place across ranks)")
        self._xchg = _exchange(comm)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        for gi, group in enumerate(self.param_groups):
            self._check_group(gi, group)
        self._dense_allreduce = dense_allreduce
        self._hooked = False
        self._warned = set()
        self._adamw = torch.optim.AdamW([{"params": g["params"]} for g in self.param_groups],
                                        lr=lr, betas=tuple(betas), eps=eps,
                                        weight_decay=weight_decay)
        self._adamw.state = self.state
        self._flat = {}  # group index -> (params, flat workspace)
        self._keys = {}  # (group index, what) -> error-feedback key
        self.sq = {"step": 0, "skipped_steps": 0, "precondition": precondition}
        self.last_exchange = None  # "dense", "compressed" or None: what the last step sent

    @staticmethod
    def _check_group(gi, group):
        devices = {p.device for p in group["params"]}
        dtypes = {p.dtype for p in group["params"]}
        if len(devices) > 1 or len(dtypes) > 1:
            raise _invalid(f"param group {gi} mixes devices {sorted(map(str, devices))} or "
                           f"dtypes {sorted(map(str, dtypes))}: give each its own group (one "
                           f"exchange per group)")
        for p in group["params"]:
            if not p.is_floating_point():
                raise _invalid(f"param group {gi} holds a {p.dtype} parameter")

    # -- what the caller asks ---------------------------------------------------------------
    @property
    def skipped_steps(self):
        return self.sq["skipped_steps"]

    def dense_step_next(self):
        """True when the next step needs gradients averaged across ranks (the DDP hook's
        question): the other steps take each rank's own."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step (closure: re-evaluates the model and returns the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.sq["step"] += 1
        self.last_exchange = None
        self._step()
        return loss

    def _step(self):
        raise NotImplementedError

    # -- pieces of a step --------------------------------------------------------------------
    def _sync_adamw_groups(self):
        for inner, outer in zip(self._adamw.param_groups, self.param_groups):
            for k in ("lr", "betas", "eps", "weight_decay"):
                inner[k] = outer[k]

    def _average_gradients(self):
        """The caller's dense all-reduce of this step's gradients (dense_allreduce), or a check
        that someone (DDP) averages them."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if self._dense_allreduce is not None:
            self._dense_allreduce(grads)
        elif not self._hooked and "grads" not in self._warned:
            self._warned.add("grads")
            warnings.warn("squeeze.optim: no dense_allreduce and no DDP hook: the gradients of "
                          "the dense steps are taken as already averaged (DDP's default "
                          "all-reduce, which then also runs in the compressed steps: register "
                          "squeeze.optim.register_ddp_hook(model, opt) to skip it)")

    def _adamw_step(self):
        self._average_gradients()
        self._sync_adamw_groups()
        self._adamw.step()
        self.last_exchange = "dense"

    def _trained(self, gi):
        """(params, flat workspace) of group gi: the parameters that have Adam state, in group
        order (the same on every rank), and a buffer of their total size for the exchange."""
        params = [p for p in self.param_groups[gi]["params"] if len(self.state[p]) > 0]
        cached = self._flat.get(gi)
        if cached is None or [id(p) for p in cached[0]] != [id(p) for p in params]:
            p0 = params[0] if params else self.param_groups[gi]["params"][0]
            flat = torch.empty(sum(p.numel() for p in params), dtype=p0.dtype, device=p0.device)
            cached = (params, flat)
            self._flat[gi] = cached
        return cached

    def _key(self, gi, what):
        """The error-feedback key of group gi's exchange `what`: the same on every rank, never
        0."""
        key = self._keys.get((gi, what))
        if key is None:
            params = self.param_groups[gi]["params"]
            text = f"squeeze.optim/{self._ALGORITHM}/{what}/{gi}/" + ",".join(
                str(p.numel()) for p in params)
            key = self._keys[(gi, what)] = fnv1a64(text.encode()) or 1
        return key

    @staticmethod
    def _views(flat, params):
        out, off = [], 0
        for p in params:
            out.append(flat[off:off + p.numel()].view_as(p))
            off += p.numel()
        return out

    def _exchange(self, flat, key):
        """Averages flat in place across ranks; False (on every rank) when the result is not
        finite."""
        if flat.numel() == 0:
            return True
        self._xchg.ef_allreduce_tensor(flat, key)
        self.last_exchange = "compressed"
        return bool(torch.isfinite(flat).all())

    @staticmethod
    def _denom(state, eps, bc2):
        return (state["exp_avg_sq"].sqrt() / math.sqrt(bc2)).add_(eps)

    def _denoms(self, group, params, bc2):
        """The update's denominators of params when the exchanges are preconditioned, else
        None."""
        if not self.precondition:
            return None
        return [self._denom(self.state[p], group["eps"], bc2) for p in params]

    @staticmethod
    def _adam_steps(state):
        s = state["step"]
        return float(s.item() if torch.is_tensor(s) else s)

    def _frozen_update(self, group, params, bc1, bc2):
        """p <- p (1 - lr wd) - lr / bc1 * m / (sqrt(v / bc2) + eps): AdamW's update with a given
        variance correction."""
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        for p in params:
            st = self.state[p]
            p.mul_(1 - lr * wd)
            p.addcdiv_(st["exp_avg"], self._denom(st, eps, bc2), value=-lr / bc1)

    def _momentum_into(self, flat, params, beta1):
        """flat <- beta1 m + (1 - beta1) g for each parameter (m itself untouched)."""
        for p, v in zip(params, self._views(flat, params)):
            torch.mul(self.state[p]["exp_avg"], beta1, out=v)
            if p.grad is not None:
                if p.grad.is_sparse:
                    raise _invalid("sparse gradients are not supported")
                v.add_(p.grad, alpha=1 - beta1)

    def _skip(self):
        self.sq["skipped_steps"] += 1
        if "nonfinite" not in self._warned:
            self._warned.add("nonfinite")
            warnings.warn("squeeze.optim: a rank's gradient holds NaN or Inf: step skipped on "
                          "every rank (counted in skipped_steps)")

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["squeeze"] = {"format": "squeeze-optim", "version": 1,
                         "algorithm": self._ALGORITHM, "counters": dict(self.sq),
                         "exchange": self._xchg.state_dict()}
        return sd

    def load_state_dict(self, state_dict):
        sq = state_dict.get("squeeze") if isinstance(state_dict, dict) else None
        if not isinstance(sq, dict) or sq.get("format") != "squeeze-optim":
            raise _invalid(f"not a {type(self).__name__} state_dict (no 'squeeze' entry)")
        if sq.get("algorithm") != self._ALGORITHM:
            raise _invalid(f"a {sq.get('algorithm')} state_dict given to "
                           f"{type(self).__name__}")
        mine, theirs = self.sq.get("precondition"), sq["counters"].get("precondition")
        if mine != theirs:
            raise _invalid(f"a state_dict of precondition={theirs} given to an optimizer of "
                           f"precondition={mine} (their residuals live in other units)")
        rest = {k: v for k, v in state_dict.items() if k != "squeeze"}
        self._xchg.load_state_dict(sq["exchange"])  # checked first: refused, nothing changes
        super().load_state_dict(rest)
        self._adamw.state = self.state
        self._flat = {}
        self.sq = dict(sq["counters"])


class OneBitAdam(_CompressedAdam):
    """1-bit Adam: AdamW for freeze_step steps (averaged gradients), then the variance frozen and
    the momentum m = beta1 m + (1 - beta1) g (each rank's own gradient) averaged with the
    Comm's method and error feedback (sqz_ef_allreduce: with SQZ_METHOD=sign about 1/32 of a
    float32 all-reduce), and AdamW's update with the frozen variance.

    comm: a squeeze.Comm over the parameters' memory (a Context with method="sign"; "quant" for
    b-bit momentum).  freeze_step: AdamW steps before compression (about 15-25 % of the run,
    as DeepSpeed's tutorial advises).  dense_allreduce: see the module's doc.

    precondition: exchange m / (sqrt(v) + eps), the frozen-variance update direction, instead of
    m (the same average: the variance is frozen and the same on every rank).  Compression error
    is then measured where it moves the parameters: a sign-compressed momentum gives every
    element of a bucket the bucket's mean magnitude, which a coordinate of small variance turns
    into a step far larger than Adam's (docs/performance.md, "Adam at one bit").  False: the
    momentum itself, as 1-bit Adam's paper does."""

    _ALGORITHM = "onebit_adam"

    def __init__(self, params, comm, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 freeze_step=100000, dense_allreduce=None, precondition=True):
        self.freeze_step = _check_int("freeze_step", freeze_step, 1)
        super().__init__(params, comm, lr, betas, eps, weight_decay, dense_allreduce,
                         precondition)

    def dense_step_next(self):
        return self.sq["step"] + 1 <= self.freeze_step

    def _step(self):
        if self.sq["step"] <= self.freeze_step:
            self._adamw_step()
            return
        t = self.sq["step"]
        for gi, group in enumerate(self.param_groups):
            params, flat = self._trained(gi)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            bc2 = 1 - beta2 ** self._adam_steps(self.state[params[0]])
            self._momentum_into(flat, params, beta1)
            views = self._views(flat, params)
            denoms = self._denoms(group, params, bc2)
            if denoms:
                for v, d in zip(views, denoms):
                    v.div_(d)
            if not self._exchange(flat, self._key(gi, "u" if denoms else "m")):
                self._skip()
                continue
            for i, (p, v) in enumerate(zip(params, views)):
                self.state[p]["exp_avg"].copy_(v)
                if denoms:
                    self.state[p]["exp_avg"].mul_(denoms[i])
            self._frozen_update(group, params, 1 - beta1 ** t, bc2)


class ZeroOneAdam(_CompressedAdam):
    """0/1 Adam: the variance updated at exponentially spaced steps (every step for
    var_update_scaler updates, then every 2nd for as many, every 4th, ...) with averaged
    gradients, the gradient averaged with the Comm's method and error feedback in the steps
    between; after var_freeze_step, local steps (each rank's own gradient and parameters) that
    synchronize the lr-weighted mean momentum, compressed, every local interval (1 step,
    doubled every local_step_scaler steps, at most local_step_clipper: H in the paper) and set
    every rank's parameters to the same point.

    The parameters of the last synchronization are kept (one copy of the model: the anchor) so
    that every rank lands on the same bits; weight decay stays decoupled.  precondition: as
    OneBitAdam's, for both exchanges (the gradient divided by the current variance's
    denominator, the synchronized momentum by the frozen one)."""

    _ALGORITHM = "zero_one_adam"

    def __init__(self, params, comm, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 var_freeze_step=100000, var_update_scaler=16, local_step_scaler=32678,
                 local_step_clipper=16, dense_allreduce=None, precondition=True):
        self.var_freeze_step = _check_int("var_freeze_step", var_freeze_step, 1)
        self.var_update_scaler = _check_int("var_update_scaler", var_update_scaler, 1)
        self.local_step_scaler = _check_int("local_step_scaler", local_step_scaler, 1)
        self.local_step_clipper = _check_int("local_step_clipper", local_step_clipper, 1)
        super().__init__(params, comm, lr, betas, eps, weight_decay, dense_allreduce,
                         precondition)
        ngroups = len(self.param_groups)
        self.sq.update(var_interval=1, var_counter=0, all_dense=True, frozen=False,
                       local_interval=1, local_counter=0, since_sync=0,
                       lrs=[0.0] * ngroups, decay=[1.0] * ngroups)

    def dense_step_next(self):
        t = self.sq["step"] + 1
        return not self.sq["frozen"] and t % self.sq["var_interval"] == 0

    def _step(self):
        if self.sq["frozen"]:
            self._local_step()
        else:
            self._variance_phase_step()
            if self.sq["step"] >= self.var_freeze_step:
                self._freeze()

    def _variance_phase_step(self):
        sq = self.sq
        t = sq["step"]
        if t % sq["var_interval"] == 0:
            if sq["all_dense"]:
                self._adamw_step()  # AdamW's own steps until the first compressed one
            else:
                self._dense_step()
            sq["var_counter"] += 1
            if sq["var_counter"] == self.var_update_scaler:
                sq["var_counter"] = 0
                sq["var_interval"] *= 2
            return
        sq["all_dense"] = False
        for gi, group in enumerate(self.param_groups):
            params, flat = self._trained(gi)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            bc2 = 1 - beta2 ** self._adam_steps(self.state[params[0]])
            denoms = self._denoms(group, params, bc2)
            for i, (p, v) in enumerate(zip(params, self._views(flat, params))):
                if p.grad is not None:
                    v.copy_(p.grad)
                    if denoms:
                        v.div_(denoms[i])
                else:
                    v.zero_()
            if not self._exchange(flat, self._key(gi, "g")):
                self._skip()
                continue
            for i, (p, v) in enumerate(zip(params, self._views(flat, params))):
                if denoms:
                    v.mul_(denoms[i])
                self.state[p]["exp_avg"].mul_(beta1).add_(v, alpha=1 - beta1)
            self._frozen_update(group, params, 1 - beta1 ** t, bc2)

    def _dense_step(self):
        """A variance step after compressed ones: AdamW's operations, the variance corrected by
        the number of its own updates and the momentum by the number of steps."""
        self._average_gradients()
        self.last_exchange = "dense"
        t = self.sq["step"]
        for gi, group in enumerate(self.param_groups):
            params, _ = self._trained(gi)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            for p in params:
                st = self.state[p]
                st["step"] += 1
                if p.grad is not None:
                    st["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                    st["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            bc2 = 1 - beta2 ** self._adam_steps(self.state[params[0]])
            self._frozen_update(group, params, 1 - beta1 ** t, bc2)

    def _freeze(self):
        """The variance is final: the gradient's residuals mean nothing to the accumulated
        updates (dropped), the anchor is today's parameters."""
        self.sq["frozen"] = True
        for gi in range(len(self.param_groups)):
            self._xchg.ef_forget(self._key(gi, "g"))
            for p in self._trained(gi)[0]:
                self.state[p]["anchor"] = p.detach().clone()

    def _local_step(self):
        sq = self.sq
        t = sq["step"]
        for gi, group in enumerate(self.param_groups):
            sq["lrs"][gi] += group["lr"]
            sq["decay"][gi] *= 1 - group["lr"] * group["weight_decay"]
            params, _ = self._trained(gi)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            for p in params:
                if p.grad is not None:
                    self.state[p]["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
            bc2 = 1 - beta2 ** self._adam_steps(self.state[params[0]])
            self._frozen_update(group, params, 1 - beta1 ** t, bc2)
        sq["since_sync"] += 1
        if sq["since_sync"] >= sq["local_interval"]:
            self._synchronize()
        sq["local_counter"] += 1
        if sq["local_counter"] == self.local_step_scaler:
            sq["local_counter"] = 0
            sq["local_interval"] = min(self.local_step_clipper, 2 * sq["local_interval"])

    def _synchronize(self):
        """x = (anchor * decay - p) * denom / lrs on each rank (its lr-weighted mean corrected
        momentum since the anchor), averaged compressed; then p = anchor * decay - lrs * x / denom
        and m = x * bc1 on every rank, and the anchor moves there.  Preconditioned, x is
        exchanged divided by denom: the mean step itself."""
        sq = self.sq
        t = sq["step"]
        for gi, group in enumerate(self.param_groups):
            params, flat = self._trained(gi)
            lrs, decay = sq["lrs"][gi], sq["decay"][gi]
            sq["lrs"][gi], sq["decay"][gi] = 0.0, 1.0
            if not params or lrs <= 0.0:
                continue  # (a group at lr 0 has not moved)
            beta1, beta2 = group["betas"]
            bc2 = 1 - beta2 ** self._adam_steps(self.state[params[0]])
            denoms = [self._denom(self.state[p], group["eps"], bc2) for p in params]
            for p, v, d in zip(params, self._views(flat, params), denoms):
                torch.mul(self.state[p]["anchor"], decay, out=v)
                v.sub_(p).div_(lrs)
                if not self.precondition:
                    v.mul_(d)
            ok = self._exchange(flat, self._key(gi, "s" if self.precondition else "u"))
            if not ok:
                self._skip()
            for p, v, d in zip(params, self._views(flat, params), denoms):
                st = self.state[p]
                p.copy_(st["anchor"]).mul_(decay)
                if ok:
                    if self.precondition:
                        p.add_(v, alpha=-lrs)
                        v.mul_(d)
                    else:
                        p.addcdiv_(v, d, value=-lrs)
                    st["exp_avg"].copy_(v).mul_(1 - beta1 ** t)
                st["anchor"].copy_(p)
        sq["since_sync"] = 0


def register_ddp_hook(model, optimizer, process_group=None):
    """Registers on a DistributedDataParallel model the communication hook that averages the
    gradients of the optimizer's dense steps (optimizer.dense_step_next()) with DDP's own
    all-reduce and hands the others over as each rank computed them."""
    if not isinstance(optimizer, _CompressedAdam):
        raise _invalid("register_ddp_hook takes a squeeze.optim optimizer")
    group = process_group if process_group is not None else getattr(model, "process_group", None)
    optimizer._hooked = True
    model.register_comm_hook((optimizer, group), _local_or_dense_hook)


def _local_or_dense_hook(state, bucket):
    import torch.distributed as dist
    optimizer, group = state
    t = bucket.buffer()
    if optimizer.dense_step_next():
        t.div_(dist.get_world_size(group))
        fut = dist.all_reduce(t, group=group, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])
    fut = torch.futures.Future()
    fut.set_result(t)
    return fut

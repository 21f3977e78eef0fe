"""Optimizers.  Each update is one fused C kernel over the model's single contiguous
parameter block (all weights and biases), with the optimizer state in one block beside it
(``state()``: shape ``(n_slots, n_params)``, float32).

Semantics follow Keras 3: ``SGD`` (momentum, Nesterov), ``Adam`` (bias-corrected step
size, epsilon outside the square root), ``AdamW`` (Adam with decoupled weight decay),
``RMSprop`` (plain momentum, optional centering), ``Adagrad`` (accumulators start at
``initial_accumulator_value``), ``Adadelta``, ``Nadam`` (Keras 3's momentum-cache
schedule ``u_t = beta_1 * (1 - 0.5 * 0.96**t)``).

Every optimizer takes, as Keras's base optimizer does:

- ``learning_rate``: a positive number or a schedule from :mod:`fastdrop.schedules`,
  evaluated at ``iterations`` (updates done so far) before each update;
- ``weight_decay``: decoupled, ``w -= learning_rate * weight_decay * w`` before the update;
- at most one of ``clipnorm`` (each variable's gradient rescaled to at most this L2 norm),
  ``clipvalue`` (each gradient element clamped to ``[-clipvalue, clipvalue]``) and
  ``global_clipnorm`` (all gradients rescaled together to at most this global norm).

Clipping is fused into the update kernel (a scale and a clamp applied to each gradient
element as it is read): the caller's gradient block is never modified.  Norms are sums of
squares in double over fixed blocks, bitwise the same for any thread count.

The interface a model uses (one step)::

    opt.build(n_params)                  # once, or when the block size changes
    opt.apply(params, grads, segments)   # = begin_step(grads, segments) +
                                         #   apply_range(params, grads, 0, n, segments)

``segments`` is an optional list of ``(lo, hi)`` ranges of the block, one per trainable
variable (sorted, not overlapping).  ``clipnorm`` clips each segment by its own norm,
``global_clipnorm`` uses the norm over all segments, and only the listed ranges are
updated: elements outside every segment (frozen variables) keep their value and their
optimizer state, and get no weight decay.  Without ``segments`` the whole block (or the
range ``[lo, hi)`` given to ``apply_range``) is one variable.
"""
import math
import numbers

import numpy as np

from . import _core
from . import schedules as _schedules

#: ``fastdrop.optimizers.schedules.ExponentialDecay`` etc., as in Keras
schedules = _schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Nadam",
           "get", "serialize", "from_config", "schedules"]


def _pos(v, name, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return float(v)


def _unit(v, name):
    v = _pos(v, name, allow_zero=True)
    if v >= 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    return v


def _opt_pos(v, name):
    """None, or a number > 0 (clipping arguments)."""
    if v is None:
        return None
    return _pos(v, name)


def _f32(x):
    return float(np.float32(x))


class Optimizer:
    """Base class: holds ``learning_rate`` (a number, settable as callbacks do, or a
    schedule), the iteration count, clipping and weight decay, and the state block.
    Subclasses define ``n_slots``, ``_slot_init`` and ``_update(params, grads, lo, hi,
    gscale)``."""

    name = "optimizer"
    n_slots = 0
    _slot_init = ()          # per-slot initial value (default 0)

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None):
        self._schedule = None
        self._lr = None
        self.learning_rate = learning_rate
        self.weight_decay = _pos(weight_decay or 0.0, "weight_decay", allow_zero=True)
        self.clipnorm = _opt_pos(clipnorm, "clipnorm")
        self.clipvalue = _opt_pos(clipvalue, "clipvalue")
        self.global_clipnorm = _opt_pos(global_clipnorm, "global_clipnorm")
        n_clip = sum(c is not None for c in (self.clipnorm, self.clipvalue,
                                             self.global_clipnorm))
        if n_clip > 1:
            raise ValueError(f"only one of clipnorm, clipvalue and global_clipnorm can be "
                             f"set; got clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        self.iterations = 0
        self._state = None
        self._step_lr = None      # the learning rate of the step in progress
        self._gscale = 1.0        # the global_clipnorm scale of the step in progress

    # ------------------------------------------------------------ learning rate
    # A number may be set between steps (LearningRateScheduler, ReduceLROnPlateau); an
    # optimizer created on a schedule keeps it (Keras: "not settable").
    @property
    def learning_rate(self):
        """The learning rate the next update uses (a schedule evaluated at
        ``iterations``)."""
        if self._schedule is not None:
            return float(self._schedule(self.iterations))
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, _schedules.LearningRateSchedule):
            self._schedule = value
            self._lr = None
            return
        if self._schedule is not None:
            raise TypeError(
                "this optimizer was created with a learning-rate schedule "
                f"({type(self._schedule).__name__}) as its learning_rate, so its learning "
                "rate is not settable; create the optimizer with a float learning_rate "
                "to set it (e.g. from LearningRateScheduler or ReduceLROnPlateau)")
        if callable(value):
            raise ValueError("learning_rate must be a number or a fastdrop.schedules."
                             f"LearningRateSchedule, got {value!r}")
        self._lr = _pos(value, "learning_rate")

    lr = learning_rate

    @property
    def schedule(self):
        """The learning-rate schedule, or None for a constant learning rate."""
        return self._schedule

    @property
    def needs_all_grads(self):
        """True when ``begin_step`` needs the complete gradient block (global_clipnorm):
        per-layer updates during backward are then impossible."""
        return self.global_clipnorm is not None

    # -------------------------------------------------------------------- state
    def build(self, n_params):
        """Allocate the state block for ``n_params`` parameters (zeros, or each slot's
        initial value) and reset ``iterations``; a no-op if already built that size."""
        n_params = int(n_params)
        if n_params < 0:
            raise ValueError(f"n_params must be >= 0, got {n_params}")
        if self._state is None or self._state.shape[1] != n_params:
            self._state = np.zeros((self.n_slots, n_params), np.float32)
            for k, v in enumerate(self._slot_init):
                if v:
                    self._state[k].fill(v)
            self.iterations = 0

    def state(self):
        return self._state

    def set_state(self, state, iterations):
        state = np.asarray(state, np.float32)
        if self._state is None or state.shape != self._state.shape:
            raise ValueError(f"optimizer state has shape {state.shape}, expected "
                             f"{None if self._state is None else self._state.shape}")
        iterations = int(iterations)
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self._state[...] = state
        self.iterations = iterations

    # ------------------------------------------------------------------- update
    def _check_block(self, params, grads):
        # Lengths only: the kernel bindings reject anything that is not a 1-D
        # C-contiguous float32 buffer, so equal lengths make every access in bounds.
        st = self._state
        if st is None:
            raise RuntimeError("the optimizer is not built: call build(n_params) first")
        n = st.shape[1]
        try:
            ok = len(params) == n and len(grads) == n
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"params and grads must be 1-D float32 arrays of the built length {n}, got "
                f"{getattr(params, 'shape', type(params).__name__)} and "
                f"{getattr(grads, 'shape', type(grads).__name__)}")
        return n

    def _check_segments(self, segments, lo, hi):
        """The validated ranges (empty ones dropped).  The last result is cached: a model
        passes the same list every step."""
        cache = getattr(self, "_seg_cache", None)
        if cache is not None and cache[0] == (lo, hi) and isinstance(segments, (list, tuple)):
            try:
                same = cache[1] == list(segments)
            except (TypeError, ValueError):      # e.g. numpy rows: compare the slow way
                same = False
            if same is True:
                return cache[2]
        out = []
        prev = lo
        try:
            items = list(segments)
        except TypeError:
            raise ValueError("segments must be a list of (lo, hi) ranges") from None
        for s in items:
            try:
                a, b = s
                a, b = int(a), int(b)
            except (TypeError, ValueError):
                raise ValueError(f"segments must be (lo, hi) pairs of ints, got {s!r}") \
                    from None
            if a < prev or b < a or b > hi:
                raise ValueError(f"segments must be sorted, non-overlapping ranges inside "
                                 f"[{lo}, {hi}), got {s!r} after position {prev}")
            if b > a:
                out.append((a, b))
            prev = b
        self._seg_cache = ((lo, hi), [(int(x[0]), int(x[1])) for x in items]
                           if all(type(x) is tuple for x in items) else None, out)
        return out

    @staticmethod
    def _coalesce(ranges):
        """Adjacent ranges merged: one kernel call per contiguous run (the update is
        elementwise, so this changes no bit)."""
        out = []
        for a, b in ranges:
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out

    def apply(self, params, grads, segments=None):
        """One update of the flat float32 ``params`` with ``grads`` (same length; never
        modified).  ``segments``: see the module docstring."""
        n = self._check_block(params, grads)
        segs = None if segments is None else self._check_segments(segments, 0, n)
        self._begin(grads, segs, n)
        self._apply_checked(params, grads, 0, n, segs)

    def begin_step(self, grads=None, segments=None):
        """Start an update: the step's learning rate is fixed (a schedule evaluated at
        ``iterations``) and the step count advances once for all ranges of the step.
        With ``global_clipnorm``, ``grads`` (the complete gradient block) is required and
        ``segments`` lists the trainable ranges the norm covers."""
        n = None
        segs = None
        if grads is not None:
            if self._state is None:
                raise RuntimeError("the optimizer is not built: call build(n_params) first")
            n = self._state.shape[1]
            if not isinstance(grads, np.ndarray) or grads.ndim != 1 or grads.shape[0] != n:
                raise ValueError(f"grads must be a 1-D float32 array of length {n}")
            if segments is not None:
                segs = self._check_segments(segments, 0, n)
        elif self.global_clipnorm is not None:
            raise RuntimeError("global_clipnorm needs the gradients of the step: call "
                               "begin_step(grads, segments) after all gradients are computed")
        self._begin(grads, segs, n)

    def _begin(self, grads, segs, n):
        if self._schedule is None:
            lr = self._lr
        else:
            lr = self._schedule(self.iterations)
            if (isinstance(lr, bool) or not isinstance(lr, numbers.Real)
                    or not math.isfinite(lr) or lr < 0):
                raise ValueError(f"the learning-rate schedule gave {lr!r} at step "
                                 f"{self.iterations}; expected a finite number >= 0")
            lr = float(lr)
        gscale = 1.0
        if self.global_clipnorm is not None:
            ranges = segs if segs is not None else [(0, n)]
            total = 0.0
            for v in self._sumsq(grads, ranges):      # in order: the same bits always
                total += v
            norm = math.sqrt(total)
            clip = self.global_clipnorm
            if not math.isfinite(norm):
                gscale = math.nan          # Keras: a non-finite norm gives NaN updates
            elif norm > clip:
                gscale = clip / norm
        self._step_lr = lr
        self._gscale = gscale
        self.iterations += 1
        self._prepare_step()

    def _prepare_step(self):
        """Per-step scalars (bias corrections) after ``iterations`` advanced."""

    def apply_range(self, params, grads, lo, hi, segments=None):
        """Update parameters [lo, hi) of the block (after ``begin_step``).  A model may
        call this per layer during backward, while that layer's gradient is still in
        cache; the result is bitwise the same as one update of the whole block.
        ``segments`` (ranges inside [lo, hi)): only they are updated, each clipped by its
        own norm with ``clipnorm``; without, [lo, hi) is one variable."""
        n = self._check_block(params, grads)
        lo, hi = int(lo), int(hi)
        if not (0 <= lo <= hi <= n):
            raise ValueError(f"range [{lo}, {hi}) is outside the block of {n} parameters")
        segs = None if segments is None else self._check_segments(segments, lo, hi)
        self._apply_checked(params, grads, lo, hi, segs)

    def _apply_checked(self, params, grads, lo, hi, segs):
        if self._step_lr is None:
            raise RuntimeError("call begin_step() before apply_range()")
        if self.clipnorm is None:
            if segs is None:
                self._update(params, grads, lo, hi, self._gscale)
                return
            cache = self._seg_cache
            if cache[2] is segs:                     # coalesce once per segment list
                if len(cache) < 4:
                    self._seg_cache = cache = cache + (self._coalesce(segs),)
                segs = cache[3]
            else:
                segs = self._coalesce(segs)
        ranges = segs if segs is not None else [(lo, hi)]
        if self.clipnorm is None:
            for a, b in ranges:
                self._update(params, grads, a, b, self._gscale)
            return
        # clipnorm: every variable scaled by clip / max(norm, clip); adjacent variables
        # with the same scale (typically 1: not clipped) share one kernel call
        clip = self.clipnorm
        run = None
        for (a, b), ss in zip(ranges, self._sumsq(grads, ranges)):
            norm = math.sqrt(ss)
            if not math.isfinite(norm):
                gscale = 0.0 if norm == math.inf else math.nan
            elif norm > clip:
                gscale = clip / norm
            else:
                gscale = 1.0
            if run is not None and run[1] == a and run[2] == gscale:
                run[1] = b
                continue
            if run is not None:
                self._update(params, grads, run[0], run[1], run[2])
            run = [a, b, gscale]
        if run is not None:
            self._update(params, grads, run[0], run[1], run[2])

    def _sumsq(self, grads, ranges):
        """Sum of squares of each range of ``grads`` (one C call for all; the bounds
        array of the last segment list is kept)."""
        if len(ranges) == 1:
            a, b = ranges[0]
            return [_core.sumsq(grads[a:b])]
        cached = getattr(self, "_bounds_cache", None)
        if cached is not None and cached[0] is ranges:
            bounds, out = cached[1], cached[2]
        else:
            bounds = np.asarray(ranges, np.int64).reshape(-1, 2)
            out = np.empty(len(ranges), np.float64)
            self._bounds_cache = (ranges, bounds, out)
        _core.sumsq_segments(grads, bounds, out)
        return out.tolist()

    @property
    def _clip(self):
        return self.clipvalue if self.clipvalue is not None else 0.0

    @property
    def _wd_lr(self):
        return _f32(np.float32(self._step_lr) * np.float32(self.weight_decay))

    def _update(self, params, grads, lo, hi, gscale):
        raise NotImplementedError

    # ------------------------------------------------------------------- config
    def get_config(self):
        lr = (_schedules.serialize(self._schedule) if self._schedule is not None
              else self._lr)
        return {"learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and decoupled
    weight decay: ``v = momentum*v - lr*g; w += v`` (Keras form)."""

    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.momentum = _unit(momentum, "momentum")
        self.nesterov = bool(nesterov)
        self.n_slots = 1 if self.momentum > 0 else 0

    def _update(self, params, grads, lo, hi, gscale):
        vel = self._state[0, lo:hi] if self.n_slots else None
        if gscale == 1.0 and self.clipvalue is None:
            _core.sgd_update(params[lo:hi], grads[lo:hi], vel, self._step_lr, self.momentum,
                             self.nesterov, self.weight_decay)
        else:
            _core.sgd_clip_update(params[lo:hi], grads[lo:hi], vel, self._step_lr,
                                  self.momentum, self.nesterov, self._wd_lr, gscale,
                                  self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return c


class Adam(Optimizer):
    """Adam (Kingma & Ba), Keras form: ``lr_t = lr*sqrt(1-b2^t)/(1-b1^t)``,
    ``w -= lr_t * m / (sqrt(v) + epsilon)``."""

    name = "adam"
    n_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.beta_1 = _unit(beta_1, "beta_1")
        self.beta_2 = _unit(beta_2, "beta_2")
        self.epsilon = _pos(epsilon, "epsilon")

    def _update(self, params, grads, lo, hi, gscale):
        if gscale == 1.0 and self.clipvalue is None:
            _core.adam_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                              self._state[1, lo:hi], self._step_lr, self.beta_1, self.beta_2,
                              self.epsilon, self.weight_decay, self.iterations)
            return
        # the same step size as the C entry point of the unclipped path computes
        t = self.iterations
        b1, b2 = _f32(self.beta_1), _f32(self.beta_2)
        lr_t = _f32(_f32(self._step_lr) * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
        _core.adam_clip_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                               self._state[1, lo:hi], lr_t, self.beta_1, self.beta_2,
                               self.epsilon, self._wd_lr, gscale, self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return c


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); Keras default 0.004."""

    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, clipnorm,
                         clipvalue, global_clipnorm)


class RMSprop(Optimizer):
    """RMSprop (Hinton), Keras form: ``vel = rho*vel + (1-rho)*g²``;
    ``inc = lr*g / sqrt(vel + epsilon)`` (centered: ``sqrt(vel - avg² + epsilon)`` with
    ``avg = rho*avg + (1-rho)*g``); with ``momentum > 0``: ``mom = momentum*mom + inc``,
    ``w -= mom``, else ``w -= inc``.  State slots: velocity, [momentum],
    [average gradient]."""

    name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.rho = _unit(rho, "rho")
        self.momentum = _unit(momentum, "momentum")
        self.epsilon = _pos(epsilon, "epsilon")
        if not isinstance(centered, (bool, np.bool_)):
            raise ValueError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)
        self.n_slots = 1 + (self.momentum > 0) + self.centered

    def _update(self, params, grads, lo, hi, gscale):
        st = self._state
        k = 1
        mom = avg = None
        if self.momentum > 0:
            mom = st[k, lo:hi]
            k += 1
        if self.centered:
            avg = st[k, lo:hi]
        _core.rmsprop_update(params[lo:hi], grads[lo:hi], st[0, lo:hi], mom, avg,
                             self._step_lr, self.rho, self.momentum, self.epsilon,
                             self._wd_lr, gscale, self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                  "centered": self.centered})
        return c


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), Keras form: ``acc += g²``, ``w -= lr*g / sqrt(acc +
    epsilon)``, the accumulators starting at ``initial_accumulator_value``."""

    name = "adagrad"
    n_slots = 1

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.initial_accumulator_value = _pos(initial_accumulator_value,
                                              "initial_accumulator_value", allow_zero=True)
        self.epsilon = _pos(epsilon, "epsilon")
        self._slot_init = (self.initial_accumulator_value,)

    def _update(self, params, grads, lo, hi, gscale):
        _core.adagrad_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                             self._step_lr, self.epsilon, self._wd_lr, gscale, self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"initial_accumulator_value": self.initial_accumulator_value,
                  "epsilon": self.epsilon})
        return c


class Adadelta(Optimizer):
    """Adadelta (Zeiler), Keras form: ``ag = rho*ag + (1-rho)*g²``;
    ``d = -sqrt(ad + eps)*g / sqrt(ag + eps)``; ``ad = rho*ad + (1-rho)*d²``;
    ``w += lr*d``.  State slots: accumulated gradient, accumulated delta."""

    name = "adadelta"
    n_slots = 2

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.rho = _unit(rho, "rho")
        self.epsilon = _pos(epsilon, "epsilon")

    def _update(self, params, grads, lo, hi, gscale):
        _core.adadelta_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                              self._state[1, lo:hi], self._step_lr, self.rho, self.epsilon,
                              self._wd_lr, gscale, self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"rho": self.rho, "epsilon": self.epsilon})
        return c


class Nadam(Optimizer):
    """Nadam (Dozat), Keras 3 form, with the momentum cache ``u_t = beta_1 * (1 - 0.5 *
    0.96**t)`` and its running product::

        m += (g - m)(1 - beta_1);  v += (g² - v)(1 - beta_2)
        m_hat = u_{t+1} m / (1 - prod_{s<=t+1} u_s) + (1 - u_t) g / (1 - prod_{s<=t} u_s)
        v_hat = v / (1 - beta_2**t);  w -= lr * m_hat / (sqrt(v_hat) + epsilon)

    (t counts from 1.)  The running product is a function of ``iterations`` and is
    recomputed after ``set_state``."""

    name = "nadam"
    n_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.beta_1 = _unit(beta_1, "beta_1")
        self.beta_2 = _unit(beta_2, "beta_2")
        self.epsilon = _pos(epsilon, "epsilon")
        self._u_prod = 1.0          # prod_{s <= _u_iters} u_s
        self._u_iters = 0

    def _u(self, s):
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** s)

    def _prepare_step(self):
        t = self.iterations
        if self._u_iters != t - 1:               # iterations was set: recompute
            p = 1.0
            for s in range(1, t):
                p *= self._u(s)
            self._u_prod, self._u_iters = p, t - 1
        u_t, u_t1 = self._u(t), self._u(t + 1)
        prod_t = self._u_prod * u_t
        prod_t1 = prod_t * u_t1
        self._u_prod, self._u_iters = prod_t, t
        self._coef = (u_t1 / (1.0 - prod_t1), (1.0 - u_t) / (1.0 - prod_t),
                      1.0 / (1.0 - self.beta_2 ** t))

    def _update(self, params, grads, lo, hi, gscale):
        cm, cg, cv = self._coef
        _core.nadam_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                           self._state[1, lo:hi], self._step_lr, self.beta_1, self.beta_2,
                           self.epsilon, cm, cg, cv, self._wd_lr, gscale, self._clip)

    def get_config(self):
        c = super().get_config()
        c.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return c


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
            "adagrad": Adagrad, "adadelta": Adadelta, "nadam": Nadam}


def get(obj):
    """An optimizer from a name ('sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'adadelta',
    'nadam'), a ``{'class_name': ..., 'config': {...}}`` dict, or an Optimizer instance."""
    if isinstance(obj, Optimizer):
        return obj
    if isinstance(obj, str) and obj.lower() in _BY_NAME:
        return _BY_NAME[obj.lower()]()
    if isinstance(obj, dict) and isinstance(obj.get("class_name"), str):
        return from_config(obj["class_name"].lower(), obj.get("config") or {})
    raise ValueError(f"optimizer must be one of {sorted(_BY_NAME)} or a "
                     f"fastdrop.optimizers.Optimizer, got {obj!r}")


def serialize(optimizer):
    """``{'class_name': name, 'config': get_config()}``."""
    return {"class_name": optimizer.name, "config": optimizer.get_config()}


def from_config(name, config):
    """The optimizer saved as ``name`` (``Optimizer.name``) with ``get_config()``'s dict;
    files written before clipping and schedules existed load unchanged."""
    if not isinstance(name, str) or name.lower() not in _BY_NAME:
        raise ValueError(f"unknown optimizer {name!r} in saved model")
    cls = _BY_NAME[name.lower()]
    try:
        return cls.from_config(config)
    except TypeError as e:
        raise ValueError(f"bad {cls.__name__} config {config!r}: {e}") from None

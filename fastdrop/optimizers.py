"""Optimizers.  Each update is one fused C kernel over the model's single contiguous
parameter block (all weights and biases), with the optimizer state in one block beside it.

Semantics follow Keras: ``SGD`` (momentum, Nesterov), ``Adam`` (bias-corrected step size,
epsilon outside the square root), ``AdamW`` (Adam with decoupled weight decay
``w -= lr * weight_decay * w``).
"""
import math
import numbers

import numpy as np

from . import _core


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


class Optimizer:
    """Base class: holds ``learning_rate`` (settable, as callbacks do) and the state block."""

    name = "optimizer"
    n_slots = 0

    def __init__(self, learning_rate):
        self.learning_rate = _pos(learning_rate, "learning_rate")
        self.iterations = 0
        self._state = None

    # The learning rate may be changed between steps (schedules, ReduceLROnPlateau).
    @property
    def learning_rate(self):
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._lr = _pos(value, "learning_rate")

    lr = learning_rate

    def build(self, n_params):
        """Allocate the state block for ``n_params`` parameters (zeros)."""
        if self._state is None or self._state.shape[1] != n_params:
            self._state = np.zeros((self.n_slots, n_params), np.float32)
            self.iterations = 0

    def state(self):
        return self._state

    def set_state(self, state, iterations):
        state = np.asarray(state, np.float32)
        if self._state is None or state.shape != self._state.shape:
            raise ValueError(f"optimizer state has shape {state.shape}, expected "
                             f"{None if self._state is None else self._state.shape}")
        self._state[...] = state
        self.iterations = int(iterations)

    def apply(self, params, grads):
        """One update of the flat float32 ``params`` with ``grads`` (same length)."""
        self.begin_step()
        self.apply_range(params, grads, 0, params.shape[0])

    def begin_step(self):
        """Start an update: the step count advances once for all ranges of the step."""
        self.iterations += 1

    def apply_range(self, params, grads, lo, hi):
        """Update parameters [lo, hi) of the block (after ``begin_step``).  A model calls
        this per layer during backward, while that layer's gradient is still in cache;
        the result is bitwise the same as one update of the whole block."""
        raise NotImplementedError

    def get_config(self):
        return {"learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and decoupled
    weight decay: ``v = momentum*v - lr*g; w += v`` (Keras form)."""

    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None):
        super().__init__(learning_rate)
        self.momentum = _unit(momentum, "momentum")
        self.nesterov = bool(nesterov)
        self.weight_decay = _pos(weight_decay or 0.0, "weight_decay", allow_zero=True)
        self.n_slots = 1 if self.momentum > 0 else 0

    def apply_range(self, params, grads, lo, hi):
        vel = self._state[0, lo:hi] if self.n_slots else None
        _core.sgd_update(params[lo:hi], grads[lo:hi], vel, self._lr, self.momentum,
                         self.nesterov, self.weight_decay)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba), Keras form: ``lr_t = lr*sqrt(1-b2^t)/(1-b1^t)``,
    ``w -= lr_t * m / (sqrt(v) + epsilon)``."""

    name = "adam"
    n_slots = 2

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=None):
        super().__init__(learning_rate)
        self.beta_1 = _unit(beta_1, "beta_1")
        self.beta_2 = _unit(beta_2, "beta_2")
        self.epsilon = _pos(epsilon, "epsilon")
        self.weight_decay = _pos(weight_decay or 0.0, "weight_decay", allow_zero=True)

    def apply_range(self, params, grads, lo, hi):
        _core.adam_update(params[lo:hi], grads[lo:hi], self._state[0, lo:hi],
                          self._state[1, lo:hi], self._lr, self.beta_1, self.beta_2,
                          self.epsilon, self.weight_decay, self.iterations)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta_1": self.beta_1,
                "beta_2": self.beta_2, "epsilon": self.epsilon,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter); Keras default 0.004."""

    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(obj):
    """An optimizer from a name ('sgd', 'adam', 'adamw') or an Optimizer instance."""
    if isinstance(obj, Optimizer):
        return obj
    if isinstance(obj, str) and obj.lower() in _BY_NAME:
        return _BY_NAME[obj.lower()]()
    raise ValueError(f"optimizer must be one of {sorted(_BY_NAME)} or a "
                     f"fastdrop.optimizers.Optimizer, got {obj!r}")


def from_config(name, config):
    if name not in _BY_NAME:
        raise ValueError(f"unknown optimizer {name!r} in saved model")
    return _BY_NAME[name].from_config(config)

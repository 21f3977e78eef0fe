"""Activation registry: every activation of Keras 3's ``keras.activations``, resolved to
C kernels (``csrc/kernels/act*.c`` through ``fastdrop/_core_act.pxi``).

An activation is named as Keras names it (``'gelu'``, ``'log_softmax'``, ...) with the
keyword arguments of its ``keras.activations`` function (``relu``: ``negative_slope``,
``max_value``, ``threshold``; ``gelu``: ``approximate``; ...).  ``get(name, params)``
returns an :class:`Act` (``None`` for ``'linear'``) that acts on the **last axis** of a
tensor of any rank:

* element-wise activations run on the flat buffer;
* row-wise ones (``softmax``, ``log_softmax``, ``sparsemax``, ``glu``) on the 2-D view
  (rows = product of the leading axes, columns = the last axis); ``glu`` halves it.

``act.forward(x, out)``; ``act.backward(grad, z, y, out)`` computes ``out = J^T grad``
from the activation's input ``z`` or its output ``y`` -- ``needs`` says which one the
stage must keep ('y' lets the output buffer serve, 'z' needs the input too).

'softmax' and 'sigmoid' as the model's last activation are fused with their
cross-entropy loss by the model (``HEADS``); anywhere else they run here.
"""
import math
import numbers

import numpy as np

from .. import _core
from .. import _validate as V

HEADS = ("softmax", "sigmoid")

#: Keras's activation functions and the keyword arguments each takes, with Keras's
#: defaults (None: required -- threshold's two).
KERAS_PARAMS = {
    "relu": {"negative_slope": 0.0, "max_value": None, "threshold": 0.0},
    "leaky_relu": {"negative_slope": 0.2},
    "relu6": {}, "elu": {"alpha": 1.0}, "selu": {}, "celu": {"alpha": 1.0},
    "softplus": {}, "softsign": {}, "squareplus": {"b": 4.0},
    "soft_shrink": {"threshold": 0.5}, "hard_shrink": {"threshold": 0.5},
    "tanh_shrink": {}, "sparse_plus": {}, "silu": {}, "hard_silu": {}, "mish": {},
    "gelu": {"approximate": False}, "tanh": {}, "hard_tanh": {}, "sigmoid": {},
    "hard_sigmoid": {}, "sparse_sigmoid": {}, "log_sigmoid": {}, "exponential": {},
    "threshold": {"threshold": None, "default_value": None},
    "linear": {},
    "softmax": {"axis": -1}, "log_softmax": {"axis": -1}, "sparsemax": {"axis": -1},
    "glu": {"axis": -1},
}
#: fastdrop's own name for gelu(approximate=True) (the tanh form)
EXTRA = ("gelu_tanh",)
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
ROWS = ("softmax", "log_softmax", "sparsemax", "glu")


def names():
    """Every accepted activation name (Keras's, their aliases, and 'gelu_tanh')."""
    return tuple(sorted(set(KERAS_PARAMS) | set(EXTRA) | set(ALIASES)))


def canonical(name):
    """The canonical name of ``name`` (a string, or a function such as
    ``keras.activations.gelu``: its ``__name__``); None when it is not an activation."""
    if name is None:
        return "linear"
    if callable(name) and not isinstance(name, str):
        name = getattr(name, "__name__", None)
    if not isinstance(name, str):
        return None
    n = name.lower()
    n = ALIASES.get(n, n)
    return n if (n in KERAS_PARAMS or n in EXTRA) else None


def check_params(name, params, where="activation"):
    """Validated keyword arguments of activation ``name`` (a dict of the ones given, in
    Keras's order).  Raises ValueError naming the argument."""
    params = dict(params or {})
    allowed = KERAS_PARAMS.get(name, {})
    for k in params:
        if k not in allowed:
            raise ValueError(f"{where} {name!r} takes no argument {k!r}"
                             + (f" (it takes {sorted(allowed)})" if allowed else ""))
    out = {}
    for k in allowed:
        if k not in params:
            continue
        v = params[k]
        if k == "approximate":
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{where} gelu: approximate must be a bool, got {v!r}")
            out[k] = bool(v)
        elif k == "axis":
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v != -1:
                raise ValueError(f"{where} {name!r}: axis must be -1 (the last axis), got "
                                 f"{v!r}; transpose the axis to the end first")
            out[k] = -1
        elif k == "max_value" and v is None:
            out[k] = None
        else:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{where} {name!r}: {k} must be a finite number, got {v!r}")
            out[k] = float(v)
    for k, d in allowed.items():
        if d is None and k not in out and name == "threshold":
            raise ValueError(f"{where} 'threshold' needs threshold= and default_value= "
                             "(Keras: keras.activations.threshold(x, threshold, default_value))")
    _kernel_of(name, out, where)       # parameter ranges
    return out


def _kernel_of(name, params, where="activation"):
    """(C kernel name, parameter tuple or None) of a canonical activation with params."""
    p = {**{k: v for k, v in KERAS_PARAMS.get(name, {}).items()}, **(params or {})}
    if name == "gelu":
        return ("gelu_tanh" if p["approximate"] else "gelu"), None
    if name == "relu":
        s, mx, t = p["negative_slope"], p["max_value"], p["threshold"]
        if mx is not None and mx < 0:
            raise ValueError(f"{where} relu: max_value must be >= 0 or None, got {mx!r}")
        if s < 0:
            raise ValueError(f"{where} relu: negative_slope must be >= 0, got {s!r}")
        if s == 0 and mx is None and t == 0:
            return "relu", None
        if s == 0 and mx == 6 and t == 0:
            return "relu6", None
        if mx is None and t == 0:
            return "leaky_relu", (s,)
        return "relu_args", (s, math.inf if mx is None else mx, t)
    if name == "leaky_relu":
        if p["negative_slope"] < 0:
            raise ValueError(f"{where} leaky_relu: negative_slope must be >= 0, got "
                             f"{p['negative_slope']!r}")
        return name, (p["negative_slope"],)
    if name in ("elu", "celu"):
        if not p["alpha"] > 0:
            raise ValueError(f"{where} {name}: alpha must be > 0, got {p['alpha']!r}")
        return name, (p["alpha"],)
    if name in ("soft_shrink", "hard_shrink"):
        if p["threshold"] < 0:
            raise ValueError(f"{where} {name}: threshold must be >= 0, got {p['threshold']!r}")
        return name, (p["threshold"],)
    if name == "squareplus":
        if p["b"] < 0:
            raise ValueError(f"{where} squareplus: b must be >= 0, got {p['b']!r}")
        return name, (p["b"],)
    if name == "threshold":
        t, d = p["threshold"], p["default_value"]
        return name, (0.0 if t is None else t, 0.0 if d is None else d)
    return name, None


class Act:
    """One activation with its parameters, on the last axis of any tensor."""

    __slots__ = ("name", "params", "kernel", "kparams", "rows", "needs")

    def __init__(self, name, params=None):
        self.name = name
        self.params = dict(params or {})
        self.kernel, self.kparams = _kernel_of(name, self.params)
        self.rows = self.kernel in ROWS
        if self.rows:
            self.needs = "z" if self.kernel == "glu" else "y"
        elif self.kernel in ("relu", "selu"):
            self.needs = "y"
        else:
            self.needs = _core.ACT_NEEDS[self.kernel]

    def out_cols(self, c):
        """Size of the last axis after the activation, for an input last axis of c."""
        if self.kernel == "glu":
            if c is not None and c % 2:
                raise ValueError(f"glu splits the last axis in two halves: it must be even, "
                                 f"got {c}")
            return None if c is None else c // 2
        return c

    def out_shape(self, shape):
        shape = tuple(shape)
        return shape[:-1] + (self.out_cols(shape[-1]),) if shape else shape

    def forward(self, x, out):
        """out = f(x); x and out C-contiguous float32 of the same leading shape (out may
        be x except for glu)."""
        k = self.kernel
        if self.rows:
            c = x.shape[-1] if x.ndim else 1
            _core.act_rows_forward(k, x.reshape(-1, c), out.reshape(-1, self.out_cols(c)))
        elif k == "relu":
            _core.relu(x.reshape(-1), out.reshape(-1))
        elif k == "selu":
            _core.selu(x.reshape(-1), out.reshape(-1))
        else:
            _core.act_forward(k, x.reshape(-1), out.reshape(-1), self.kparams)

    def backward(self, grad, z, y, out):
        """out = J^T grad, from z (the input) or y (the output) as ``needs`` says."""
        k = self.kernel
        if self.rows:
            c = out.shape[-1]
            _core.act_rows_backward(k, grad.reshape(-1, self.out_cols(c)),
                                    None if z is None else z.reshape(-1, c),
                                    None if y is None else y.reshape(-1, c),
                                    out.reshape(-1, c))
        elif k == "relu":
            _core.relu_backward(grad.reshape(-1), y.reshape(-1), out.reshape(-1))
        elif k == "selu":
            _core.selu_backward(grad.reshape(-1), y.reshape(-1), out.reshape(-1))
        else:
            _core.act_backward(k, grad.reshape(-1), None if z is None else z.reshape(-1),
                               None if y is None else y.reshape(-1), out.reshape(-1),
                               self.kparams)

    def __repr__(self):
        return f"<Act {self.name}{self.params or ''}>"


def get(name, params=None):
    """The :class:`Act` of ``name`` (any accepted name or alias) with its keyword
    arguments; None for 'linear' or an unknown name."""
    n = canonical(name)
    if n is None or n == "linear":
        return None
    if n == "gelu_tanh":
        n, params = "gelu", {**(params or {}), "approximate": True}
    return Act(n, check_params(n, params))


def spec_of(layer):
    """(name, params) of the activation a layer applies (``layer.activation`` and its
    ``activation_params``, if any)."""
    return (getattr(layer, "_plan_act", None) or layer.activation,
            getattr(layer, "activation_params", None) or {})


def _out(out, name, shape):
    if out is None:
        return np.empty(shape, dtype=np.float32)
    return V.out_array(out, name, shape)


def _act(name, params):
    if canonical(name) in (None, "linear") and name not in ("linear", None):
        raise ValueError(f"name must be one of {names()}, got {name!r}")
    return get(name, params)


def apply(name, x, out=None, **params):
    """Any ``keras.activations`` function by name, with its keyword arguments, on the
    last axis of x (any rank >= 1): element-wise ones on every element, ``softmax``,
    ``log_softmax``, ``sparsemax`` and ``glu`` row by row over the last axis (``glu``
    halves it).  ``apply('softmax', logits)`` on (n, T, C) is a per-step softmax."""
    V.float32_array(x, "x")
    fn = _act(name, params)
    shape = x.shape if fn is None else fn.out_shape(x.shape)
    out = _out(out, "out", shape)
    if fn is None:
        out[...] = x
    else:
        fn.forward(x, out)
    return out


def apply_backward(name, grad, x, y=None, out=None, **params):
    """``J^T grad`` of ``apply(name, x, **params)`` (the gradient with respect to x):
    grad has the output's shape; y (the forward output) is computed when not given."""
    V.float32_array(x, "x")
    fn = _act(name, params)
    shape = x.shape if fn is None else fn.out_shape(x.shape)
    V.out_array(grad, "grad", shape, writeable=False)
    out = _out(out, "out", x.shape)
    if fn is None:
        out[...] = grad
        return out
    if y is None:
        y = apply(name, x, **params)
    else:
        V.out_array(y, "y", shape, writeable=False)
    fn.backward(grad, x, y, out)
    return out

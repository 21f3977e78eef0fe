"""NumPy reference of fastdrop's activation kernels (csrc/kernels/act.h), in float64.

``forward(name, x)`` and ``derivative(name, z)`` are the mathematical functions (the test
oracle: float64 from the float32 inputs); ``backward(name, grad, z, y)`` is what the
kernel computes, from z or from the output y as ``NEEDS`` says (the derivative written
as a function of y is exact for the float32 y it is given).

The registry (names, which of z / y backward needs, the parameter defaults) is the same
as the binding's (``fastdrop._core.ACT_NEEDS``); Keras names: 'swish' is 'silu';
'gelu' is Keras' default ``approximate=False``, 'gelu_tanh' its ``approximate=True``;
'hard_sigmoid' is Keras 3's (relu6(x + 3) / 6, not Keras 2's 0.2 x + 0.5).
"""
import math

import numpy as np

#: which input backward reads: 'z' (pre-activation), 'y' (output) or None
NEEDS = {
    "linear": None,
    "relu": "y",
    "relu6": "y",
    "leaky_relu": "y",
    "elu": "y",
    "tanh": "y",
    "sigmoid": "y",
    "softplus": "y",
    "silu": "z",
    "gelu": "z",
    "gelu_tanh": "z",
    "hard_sigmoid": "y",
    "softsign": "y",
    "mish": "z",
    "celu": "y",
    "hard_silu": "z",
    "hard_tanh": "y",
    "soft_shrink": "z",
    "hard_shrink": "z",
    "tanh_shrink": "z",
    "log_sigmoid": "y",
    "exponential": "y",
    "sparse_plus": "z",
    "squareplus": "z",
    "threshold": "z",
    "relu_args": "z",
    "sparse_sigmoid": "y",
    "selu": "y",
}
#: Keras aliases of the names above
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
#: parameters (Keras's defaults): a number, or a tuple for the ones with several
#: (threshold: (threshold, default_value); relu_args: Keras relu's (negative_slope,
#: max_value (inf: none), threshold))
PARAM_DEFAULT = {"leaky_relu": 0.2, "elu": 1.0, "celu": 1.0, "soft_shrink": 0.5,
                 "hard_shrink": 0.5, "squareplus": 4.0, "threshold": (0.0, 0.0),
                 "relu_args": (0.0, float("inf"), 0.0)}
NAMES = tuple(NEEDS)
#: row-wise activations (the last axis): which input their backward reads
ROWS_NEEDS = {"softmax": "y", "log_softmax": "y", "sparsemax": "y", "glu": "x"}

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SELU_A = float(np.float32(1.67326324))     # the kernel's float32 constants
_SELU_S = float(np.float32(1.05070098))
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GT_C = math.sqrt(2.0 / math.pi)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def canonical(name):
    """The registry name for a Keras activation name (aliases resolved)."""
    name = ALIASES.get(name, name)
    if name not in NEEDS:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(set(NEEDS) | set(ALIASES))}")
    return name


def _param(name, param):
    """The first parameter (a float), or the whole tuple for the multi-parameter ones."""
    d = PARAM_DEFAULT.get(name, 0.0)
    if isinstance(d, tuple):
        if param is None:
            return d
        param = tuple(param) if isinstance(param, (tuple, list)) else (param,)
        return tuple(float(v) for v in param) + d[len(param):]
    if param is None:
        return d
    if isinstance(param, (tuple, list)):
        param = param[0]
    return float(param)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _phi_cdf(x):
    """Normal CDF with relative accuracy in the lower tail: erfc(-x/sqrt2)/2."""
    return 0.5 * _erfc(-x * _SQRT1_2)


def _with_limits(x, r, neg_inf, pos_inf):
    r = np.where(np.isneginf(x), neg_inf, r)
    return np.where(np.isposinf(x), pos_inf, r)


def forward(name, x, param=None):
    """f(x) in float64 (x is converted to float64 first)."""
    name = canonical(name)
    a = _param(name, param)
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        if name == "linear":
            return x.copy()
        if name == "relu":
            return np.where(x > 0, x, np.where(np.isnan(x), x, 0.0))
        if name == "relu6":
            return np.where(x > 6, 6.0, np.where(x > 0, x, np.where(np.isnan(x), x, 0.0)))
        if name == "leaky_relu":
            return np.where(x > 0, x, a * x)
        if name == "elu":
            return np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0)))
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            return _sigmoid(x)
        if name == "softplus":
            return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
        if name == "silu":
            return _with_limits(x, x * _sigmoid(x), -0.0, np.inf)
        if name == "gelu":
            return _with_limits(x, x * _phi_cdf(x), -0.0, np.inf)
        if name == "gelu_tanh":
            v = 2.0 * _GT_C * (x + 0.044715 * x ** 3)
            return _with_limits(x, x * _sigmoid(v), -0.0, np.inf)
        if name == "hard_sigmoid":
            return np.where(np.isnan(x), x, np.clip(x + 3.0, 0.0, 6.0) / 6.0)
        if name == "softsign":
            return _with_limits(x, x / (1.0 + np.abs(x)), -1.0, 1.0)
        if name == "mish":
            return _with_limits(x, x * np.tanh(np.logaddexp(0.0, x)), -0.0, np.inf)
        if name == "celu":
            return np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0) / a))
        if name == "hard_silu":
            return x * np.where(np.isnan(x), x, np.clip(x + 3.0, 0.0, 6.0) / 6.0)
        if name == "hard_tanh":
            return np.clip(x, -1.0, 1.0)
        if name == "soft_shrink":
            return np.where(x > a, x - a, np.where(x < -a, x + a, np.where(np.isnan(x), x, 0.0)))
        if name == "hard_shrink":
            return np.where(np.abs(x) > a, x, np.where(np.isnan(x), x, 0.0))
        if name == "tanh_shrink":     # the series below 1e-2 (x - tanh x cancels)
            x2 = x * x
            series = x * x2 * (1 / 3 - x2 * (2 / 15 - x2 * 17 / 315))
            return np.where(np.abs(x) < 1e-2, series, x - np.tanh(x))
        if name == "log_sigmoid":
            return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))
        if name == "exponential":
            return np.exp(x)
        if name == "sparse_plus":
            return np.where(x <= -1, 0.0, np.where(x >= 1, x, 0.25 * (x + 1) ** 2))
        if name == "squareplus":
            s = np.sqrt(x * x + a)
            return np.where(x >= 0, 0.5 * (x + s), a / (2.0 * (s - x)))
        if name == "threshold":
            t, d = a
            return np.where(x > t, x, d)
        if name == "relu_args":
            slope, mx, t = a
            r = np.where(x > t, x, np.where(np.isnan(x), x, 0.0))
            if mx < np.inf:
                r = np.clip(r, 0.0, mx)
            return r - slope * np.maximum(t - x, 0.0)
        if name == "sparse_sigmoid":
            return np.where(x <= -1, 0.0, np.where(x >= 1, 1.0, 0.5 * (x + 1)))
        if name == "selu":
            return _SELU_S * np.where(x >= 0, x, _SELU_A * np.expm1(np.minimum(x, 0.0)))
    raise AssertionError(name)


def derivative(name, z, param=None):
    """f'(z) in float64 (relu-like kinks: the right derivative 0 at z = 0, as the
    kernels; relu6 0 at z = 6)."""
    name = canonical(name)
    a = _param(name, param)
    z = np.asarray(z, np.float64)
    with np.errstate(all="ignore"):
        if name == "linear":
            return np.ones_like(z)
        if name == "relu":
            return (z > 0).astype(np.float64)
        if name == "relu6":
            return ((z > 0) & (z < 6)).astype(np.float64)
        if name == "leaky_relu":
            return np.where(z > 0, 1.0, a)
        if name == "elu":
            return np.where(z > 0, 1.0, a * np.exp(np.minimum(z, 0.0)))
        if name == "tanh":
            return 1.0 / np.cosh(z) ** 2
        if name in ("sigmoid", "softplus"):
            s = _sigmoid(z)
            return s * _sigmoid(-z) if name == "sigmoid" else s
        if name == "silu":
            s = _sigmoid(z)
            return _with_limits(z, s + z * s * _sigmoid(-z), 0.0, 1.0)
        if name == "gelu":
            return _with_limits(z, _phi_cdf(z) + z * np.exp(-0.5 * z * z) * _INV_SQRT_2PI,
                                0.0, 1.0)
        if name == "gelu_tanh":
            v = 2.0 * _GT_C * (z + 0.044715 * z ** 3)
            dv = 2.0 * _GT_C * (1.0 + 3 * 0.044715 * z * z)
            s = _sigmoid(v)
            return _with_limits(z, s + z * dv * s * _sigmoid(-v), 0.0, 1.0)
        if name == "hard_sigmoid":
            return ((z > -3) & (z < 3)) / 6.0
        if name == "softsign":
            return 1.0 / (1.0 + np.abs(z)) ** 2
        if name == "mish":
            t = np.tanh(np.logaddexp(0.0, z))
            return _with_limits(z, t + z * _sigmoid(z) * (1 - t * t), 0.0, 1.0)
        if name == "celu":
            return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0) / a))
        if name == "hard_silu":
            return np.where(z < -3, 0.0, np.where(z > 3, 1.0, z / 3.0 + 0.5))
        if name == "hard_tanh":
            return ((z > -1) & (z < 1)).astype(np.float64)
        if name in ("soft_shrink", "hard_shrink"):
            return (np.abs(z) > a).astype(np.float64)
        if name == "tanh_shrink":
            return np.tanh(z) ** 2
        if name == "log_sigmoid":
            return _sigmoid(-z)
        if name == "exponential":
            return np.exp(z)
        if name == "sparse_plus":
            return np.where(z <= -1, 0.0, np.where(z >= 1, 1.0, 0.5 * (z + 1)))
        if name == "squareplus":   # b = 0: relu's derivative, 1/2 at 0 (as the kernel)
            s = np.sqrt(z * z + a)
            return np.where(np.isposinf(z), 1.0, np.where(np.isneginf(z), 0.0,
                            np.where(s > 0, 0.5 * (1.0 + z / np.where(s > 0, s, 1.0)), 0.5)))
        if name == "threshold":
            return (z > a[0]).astype(np.float64)
        if name == "relu_args":
            slope, mx, t = a
            inside = (z > t) & ((mx == np.inf) | ((z >= 0) & (z <= mx)))
            return inside + slope * (z < t)
        if name == "sparse_sigmoid":
            return np.where((z > -1) & (z < 1), 0.5, 0.0)
        if name == "selu":
            return _SELU_S * np.where(z > 0, 1.0, _SELU_A * np.exp(np.minimum(z, 0.0)))
    raise AssertionError(name)


def derivative_from_y(name, y, param=None):
    """f' written in terms of the output y, for the activations whose NEEDS is 'y'."""
    name = canonical(name)
    a = _param(name, param)
    y = np.asarray(y, np.float64)
    if name == "relu":
        return (y > 0).astype(np.float64)
    if name == "relu6":
        return ((y > 0) & (y < 6)).astype(np.float64)
    if name == "leaky_relu":
        return np.where(y > 0, 1.0, a)
    if name == "elu":
        return np.where(y > 0, 1.0, y + a)
    if name == "tanh":
        return (1.0 - y) * (1.0 + y)
    if name == "sigmoid":
        return y * (1.0 - y)
    if name == "softplus":
        return -np.expm1(-y)
    if name == "hard_sigmoid":
        return ((y > 0) & (y < 1)) / 6.0
    if name == "softsign":
        return (1.0 - np.abs(y)) ** 2
    if name == "celu":
        return np.where(y > 0, 1.0, y / a + 1.0)
    if name == "hard_tanh":
        return ((y > -1) & (y < 1)).astype(np.float64)
    if name == "log_sigmoid":
        return -np.expm1(y)
    if name == "exponential":
        return y.copy()
    if name == "sparse_sigmoid":
        return np.where((y > 0) & (y < 1), 0.5, 0.0)
    if name == "selu":
        # the kernel's float32 constant s * a (y + s a cancels for very negative z)
        return np.where(y > 0, _SELU_S, y + float(np.float32(_SELU_S) * np.float32(_SELU_A)))
    raise ValueError(f"{name} backward does not read y")


def backward(name, grad, z=None, y=None, param=None):
    """grad * f', from z or y as NEEDS says, in float64."""
    name = canonical(name)
    g = np.asarray(grad, np.float64)
    need = NEEDS[name]
    if need is None:
        return g.copy()
    if need == "y":
        return g * derivative_from_y(name, y, param)
    return g * derivative(name, z, param)


def forward32(name, x, param=None):
    return forward(name, x, param).astype(np.float32)


def backward32(name, grad, z=None, y=None, param=None):
    return backward(name, grad, z, y, param).astype(np.float32)


# ------------------------------------------------- row-wise (the last axis)
def rows_forward(name, x):
    """softmax / log_softmax / sparsemax / glu over the last axis, float64."""
    x = np.asarray(x, np.float64)
    if name == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if name == "log_softmax":
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    if name == "sparsemax":     # the sort-based definition (Martins & Astudillo, 2016)
        c = x.shape[-1]
        zs = -np.sort(-x, axis=-1)
        cs = np.cumsum(zs, -1)
        k = np.arange(1, c + 1)
        support = 1 + k * zs > cs
        kz = support.sum(-1, keepdims=True)
        tau = (np.take_along_axis(cs, kz - 1, -1) - 1) / kz
        return np.maximum(x - tau, 0.0)
    if name == "glu":
        a, b = np.split(x, 2, axis=-1)
        return a * _sigmoid(b)
    raise ValueError(f"unknown row-wise activation {name!r}")


def rows_vjp(name, g, x):
    """J^T g over the last axis (g of the output's shape), float64, from the Jacobian's
    closed form (softmax: diag(y) - y y^T; log_softmax: I - 1 y^T; sparsemax:
    diag(s) - s s^T / |s| on the support s; glu: the product rule)."""
    g = np.asarray(g, np.float64)
    x = np.asarray(x, np.float64)
    if name == "softmax":
        y = rows_forward(name, x)
        return y * (g - (g * y).sum(-1, keepdims=True))
    if name == "log_softmax":
        y = rows_forward("softmax", x)
        return g - y * g.sum(-1, keepdims=True)
    if name == "sparsemax":
        s = rows_forward(name, x) > 0
        v = (g * s).sum(-1, keepdims=True) / s.sum(-1, keepdims=True)
        return np.where(s, g - v, 0.0)
    if name == "glu":
        a, b = np.split(x, 2, axis=-1)
        sb = _sigmoid(b)
        return np.concatenate([g * sb, g * a * sb * (1 - sb)], -1)
    raise ValueError(f"unknown row-wise activation {name!r}")

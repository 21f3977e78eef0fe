"""Losses, with Keras 3 semantics (reduction 'sum_over_batch_size').

The interface the model calls:

* ``loss.head``: the final activation the loss fuses with — ``'softmax'`` (categorical
  cross-entropies), ``'sigmoid'`` (binary cross-entropy) or ``None`` (regression).  When
  ``head`` is set and ``from_logits`` is False the model drops a final activation equal to
  ``head`` and hands the loss the logits; with ``from_logits=True`` the model's last layer
  is linear and its output is the logits.  Either way ``forward_backward`` / ``sum_loss``
  receive logits when ``head`` is not None (the fused kernels: one pass for loss and
  gradient, stabler than differentiating through the activation).  A model whose output is
  already probabilities (head set, from_logits False, final activation not ``head``) calls
  ``forward_backward_probs`` / ``sum_loss_probs`` instead (Keras: outputs clipped to
  [1e-7, 1 - 1e-7]; categorical outputs first renormalised to sum 1).
* ``prepare_targets(y, n, out_shape, name='y')`` validates and converts the targets once
  against the per-sample output shape (an int for a vector output).  For an N-D output
  (n, T, C) the model hands the loss rows: logits (n*T, C) with targets (n*T, C) or labels
  (n*T,), per-row weights (sample weight x the output mask, scaled as Keras's
  ``apply_mask``), so each step is one row of the fused kernels.
* ``forward_backward(z, y, grad, weights=None) -> float``: the sum over the m = z.shape[0]
  rows of w_i * loss_i; writes ``grad = d(sum_i w_i loss_i / m)/dz`` (Keras weighting: the
  mean over the batch of weight x loss, divided by the batch size, not the weight sum).
  loss_i is the mean over the last axis (Keras).  ``weights``: float32 (m,) or None.
* ``sum_loss(z, y, weights=None) -> float``: the same sum, no gradient.

Losses: CategoricalCrossentropy(from_logits, label_smoothing), SparseCategoricalCrossentropy
(from_logits; Keras 3 has no label smoothing there), BinaryCrossentropy(from_logits,
label_smoothing), MeanSquaredError, MeanAbsoluteError, Huber(delta); ``get`` resolves
Keras names ('mse', 'mae', 'bce', 'huber', class names, ...) and serialized dicts.
"""
import numpy as np

from . import _core

EPSILON = 1e-7     # keras.config.epsilon()
_LO = float(np.float32(EPSILON))                       # Keras clips in float32
_HI = float(np.float32(1.0) - np.float32(EPSILON))
REDUCTION = "sum_over_batch_size"


def _f32c(a):
    if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(a, dtype=np.float32)


def _weights(weights, m):
    if weights is None:
        return None
    w = _f32c(weights).reshape(-1)
    if w.shape[0] != m:
        raise ValueError(f"weights have {w.shape[0]} entries but the batch has {m} rows")
    return w


def prepare_sample_weight(sample_weight, n, name="sample_weight"):
    """Validate per-sample weights: (n,) or (n, 1) of finite numbers -> float32 (n,)."""
    if sample_weight is None:
        return None
    w = sample_weight if isinstance(sample_weight, np.ndarray) else np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) for {n} samples, got shape "
                         f"{w.shape}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return w


def _check_n(y, n, name):
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if y.shape[0:1] != (n,):
        raise ValueError(f"{name} has {y.shape[0] if y.ndim else 0} samples but x has {n}")
    return y


def _out_shape(out):
    """The per-sample output shape: a tuple, or an int (a vector of that many outputs)."""
    if isinstance(out, (int, np.integer)):
        return (int(out),)
    return tuple(int(d) for d in out)


def _shape_str(n, s):
    return "(" + ", ".join(str(d) for d in ("n",) + tuple(s)) + ")"


def _fit_shape(y, n, out):
    """y reshaped to (n, *out) as Keras's squeeze_or_expand_to_same_rank pairs targets
    with outputs (a missing or an extra trailing axis of 1), or None if it does not fit."""
    s = y.shape[1:]
    if s == out:
        return y
    if (out[-1] == 1 and s == out[:-1]) or s == out + (1,):
        return y.reshape((n,) + out)
    return None


def _float_targets(y, n, out_shape, name, what, hint=""):
    """float32 targets of the output's shape (n, *out_shape); (n,) accepted for one
    output, (n, T) for outputs (n, T, 1)."""
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
    out = _out_shape(out_shape)
    yy = _fit_shape(y, n, out)
    if yy is None:
        if len(out) == 1:
            raise ValueError(f"{name} must have shape (n, {out[0]}) for {what} with {out[0]} "
                             f"outputs, got shape {y.shape}{hint}")
        raise ValueError(f"{name} must have shape {_shape_str(n, out)} for {what} with outputs "
                         f"of shape {_shape_str(n, out)}, got shape {y.shape}{hint}")
    yf = np.ascontiguousarray(yy, dtype=np.float32)
    if not np.isfinite(yf).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return yf


class Loss:
    """Base class: see the module docstring for the interface."""

    name = "loss"
    head = None          # 'softmax' | 'sigmoid' | None
    sparse = False       # integer labels
    reduction = REDUCTION

    def __init__(self, from_logits=False, reduction=REDUCTION, name=None, dtype=None):
        if dtype not in (None, "float32"):
            raise ValueError(f"dtype must be None or 'float32' (fastdrop computes losses in "
                             f"float32 with float64 sums), got {dtype!r}")
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be a bool, got {from_logits!r}")
        if reduction != REDUCTION:
            raise ValueError(f"reduction must be {REDUCTION!r} (the only one fastdrop "
                             f"supports), got {reduction!r}")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"name must be a non-empty string, got {name!r}")
            self.name = name
        self.from_logits = bool(from_logits)

    # legacy (v1 model): a final softmax is required and fused
    @property
    def needs_softmax(self):
        return self.head == "softmax"

    # ------------------------------------------------------------ targets
    def prepare_targets(self, y, n, out_shape, name="y"):
        """Targets checked against the per-sample output shape ``out_shape`` (a tuple;
        an int for a vector output) and converted once: float32 (n, *out_shape)."""
        y = _check_n(y, n, name)
        return _float_targets(y, n, out_shape, name, self.name)

    # -------------------------------------------------------------- loss
    def forward_backward(self, z, y, grad, weights=None):
        raise NotImplementedError

    def sum_loss(self, z, y, weights=None):
        raise NotImplementedError

    def forward_backward_probs(self, p, y, grad, weights=None):
        """As forward_backward, on probabilities (the model's output after its own final
        activation).  For losses without a head: the same as forward_backward."""
        return self.forward_backward(p, y, grad, weights)

    def sum_loss_probs(self, p, y, weights=None):
        return self.sum_loss(p, y, weights)

    def _legacy(self, z, y, m, grad):
        # the v1 model's call forward_backward(logits, y, m, grad); remove with it
        return type(self).forward_backward(self, z[:m], y[:m], grad)

    # ------------------------------------------------------------- config
    def get_config(self):
        return {"name": self.name, "reduction": self.reduction,
                "from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k not in ("name", "reduction"))
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


def _label_smoothing(ls):
    try:
        ls = float(ls)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {ls!r}") from None
    if not 0.0 <= ls <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {ls}")
    return ls


def _is_legacy(grad, weights):
    return isinstance(grad, (int, np.integer)) and not isinstance(grad, bool)


# --------------------------------------------------------------- categorical
def _probs_xent(p, t, grad, w, m):
    """Keras cross-entropy on probabilities: p / sum(p), clipped to [eps, 1 - eps];
    returns the weighted row-loss sum and writes grad (d(sum/m)/dp) if given."""
    p64 = np.asarray(p, np.float64)
    s = p64.sum(axis=1, keepdims=True)
    q = p64 / s
    qc = np.clip(q, _LO, _HI)
    rows = -(t * np.log(qc)).sum(axis=1)
    wr = np.ones(p64.shape[0]) if w is None else w.astype(np.float64)
    if grad is not None:
        inside = (q >= _LO) & (q <= _HI)
        gq = np.where(inside, -t / qc, 0.0)
        gp = (gq - (gq * q).sum(axis=1, keepdims=True)) / s
        grad[...] = (gp * (wr / m)[:, None]).astype(np.float32)
    return float(np.sum(rows * wr))


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot or soft targets (n, classes); head 'softmax'.
    label_smoothing: targets t (1 - ls) + ls / classes."""

    name = "categorical_crossentropy"
    head = "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction=REDUCTION, name=None, dtype=None):
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        if axis != -1:
            raise ValueError(f"axis must be -1, got {axis!r}")
        self.label_smoothing = _label_smoothing(label_smoothing)
        self._smooth_buf = None

    def prepare_targets(self, y, n, out_shape, name="y"):
        y = _check_n(y, n, name)
        out = _out_shape(out_shape)
        if y.dtype.kind in "biuf" and y.shape[1:] != out:
            raise ValueError(f"{name} must be one-hot targets of shape {_shape_str(n, out)} "
                             f"for categorical_crossentropy, got shape {y.shape} (use "
                             "fastdrop.utils.to_categorical(y), or "
                             "loss='sparse_categorical_crossentropy' for integer labels)")
        return _float_targets(y, n, out, name, "categorical_crossentropy")

    def _targets(self, y):
        ls = self.label_smoothing
        if ls == 0.0:
            return y
        buf = self._smooth_buf
        if buf is None or buf.shape[1:] != y.shape[1:] or buf.shape[0] < y.shape[0]:
            buf = self._smooth_buf = np.empty(y.shape, np.float32)
        out = buf[:y.shape[0]]
        np.multiply(y, np.float32(1.0 - ls), out=out)
        out += np.float32(ls / y.shape[1])
        return out

    def forward_backward(self, z, y, grad, weights=None):
        if _is_legacy(grad, weights):
            return self._legacy(z, y, grad, weights)
        m = z.shape[0]
        t = self._targets(y)
        w = _weights(weights, m)
        if w is None:
            return _core.softmax_xent_targets(z, t, 1.0 / m, grad)
        return _core.softmax_xent_weighted(z, None, t, 1.0 / m, grad, w)

    def sum_loss(self, z, y, weights=None):
        t = self._targets(y)
        w = _weights(weights, z.shape[0])
        if w is None:
            return _core.softmax_xent_targets(z, t, 1.0, None)
        return _core.softmax_xent_weighted(z, None, t, 1.0, None, w)

    def forward_backward_probs(self, p, y, grad, weights=None):
        m = p.shape[0]
        return _probs_xent(p, self._targets(y).astype(np.float64), grad,
                           _weights(weights, m), m)

    def sum_loss_probs(self, p, y, weights=None):
        return _probs_xent(p, self._targets(y).astype(np.float64), None,
                           _weights(weights, p.shape[0]), 1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels (n,); head 'softmax'.  As Keras 3:
    no label smoothing; ignore_class is not supported."""

    name = "sparse_categorical_crossentropy"
    head = "softmax"
    sparse = True

    def __init__(self, from_logits=False, ignore_class=None, axis=-1, reduction=REDUCTION,
                 name=None, dtype=None):
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        if ignore_class is not None:
            raise ValueError("ignore_class is not supported by fastdrop")
        if axis != -1:
            raise ValueError(f"axis must be -1, got {axis!r}")

    def prepare_targets(self, y, n, out_shape, name="y"):
        """Integer labels of the output's shape without its class axis: (n,) for a vector
        of class scores, (n, T) for per-step scores (n, T, classes); a trailing axis of 1
        is accepted.  Returned as int64 (n, *out_shape[:-1])."""
        y = _check_n(y, n, name)
        out = _out_shape(out_shape)
        steps, out_dim = out[:-1], out[-1]
        if y.shape[1:] == steps + (1,):
            y = y.reshape((n,) + steps)
        if y.shape[1:] != steps:
            raise ValueError(f"{name} must be integer class labels of shape "
                             f"{_shape_str(n, steps)} for sparse_categorical_crossentropy with "
                             f"outputs of shape {_shape_str(n, out)}, got shape {y.shape} "
                             "(use 'categorical_crossentropy' for one-hot targets)")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{name} must hold integer class labels, got non-integer "
                                 "values")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        yi = y.astype(np.int64)
        if n and (yi.min() < 0 or yi.max() >= out_dim):
            raise ValueError(f"{name} labels must be in [0, {out_dim}) for {out_dim} "
                             f"classes, got values in [{yi.min()}, {yi.max()}]")
        return np.ascontiguousarray(yi)

    def forward_backward(self, z, y, grad, weights=None):
        if _is_legacy(grad, weights):
            return self._legacy(z, y, grad, weights)
        m = z.shape[0]
        w = _weights(weights, m)
        if w is None:
            return _core.softmax_xent_labels(z, y, 1.0 / m, grad)
        return _core.softmax_xent_weighted(z, y, None, 1.0 / m, grad, w)

    def sum_loss(self, z, y, weights=None):
        w = _weights(weights, z.shape[0])
        if w is None:
            return _core.softmax_xent_labels(z, y, 1.0, None)
        return _core.softmax_xent_weighted(z, y, None, 1.0, None, w)

    def _onehot(self, y, c):
        t = np.zeros((y.shape[0], c))
        t[np.arange(y.shape[0]), y] = 1.0
        return t

    def forward_backward_probs(self, p, y, grad, weights=None):
        m = p.shape[0]
        return _probs_xent(p, self._onehot(y, p.shape[1]), grad, _weights(weights, m), m)

    def sum_loss_probs(self, p, y, weights=None):
        return _probs_xent(p, self._onehot(y, p.shape[1]), None,
                           _weights(weights, p.shape[0]), 1)


# -------------------------------------------------------------------- binary
class BinaryCrossentropy(Loss):
    """Binary cross-entropy, mean over the last axis; head 'sigmoid' (the fused kernel on
    logits: max(z, 0) - z t + log1p(exp(-|z|)), gradient sigmoid(z) - t).  Targets
    (n, outputs), or (n,) for one output; soft targets allowed.  label_smoothing: targets
    t (1 - ls) + ls / 2."""

    name = "binary_crossentropy"
    head = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction=REDUCTION, name=None, dtype=None):
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        if axis != -1:
            raise ValueError(f"axis must be -1, got {axis!r}")
        self.label_smoothing = _label_smoothing(label_smoothing)

    def prepare_targets(self, y, n, out_shape, name="y"):
        y = _check_n(y, n, name)
        out = _out_shape(out_shape)
        return _float_targets(y, n, out, name, "binary_crossentropy",
                              " ((n,) is accepted for one output)" if out == (1,) else "")

    def forward_backward(self, z, y, grad, weights=None):
        if _is_legacy(grad, weights):
            return self._legacy(z, y, grad, weights)
        m = z.shape[0]
        return _core.bce_logits(z, y, 1.0 / m, grad, _weights(weights, m),
                                self.label_smoothing)

    def sum_loss(self, z, y, weights=None):
        return _core.bce_logits(z, y, 1.0, None, _weights(weights, z.shape[0]),
                                self.label_smoothing)

    def forward_backward_probs(self, p, y, grad, weights=None):
        m = p.shape[0]
        return _core.bce_probs(p, y, 1.0 / m, grad, _weights(weights, m),
                               self.label_smoothing, EPSILON)

    def sum_loss_probs(self, p, y, weights=None):
        return _core.bce_probs(p, y, 1.0, None, _weights(weights, p.shape[0]),
                               self.label_smoothing, EPSILON)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


# ---------------------------------------------------------------- regression
class _Regression(Loss):
    kind = None

    def __init__(self, reduction=REDUCTION, name=None, dtype=None):
        super().__init__(from_logits=False, reduction=reduction, name=name, dtype=dtype)

    def _param(self):
        return 1.0

    def forward_backward(self, z, y, grad, weights=None):
        if _is_legacy(grad, weights):
            return self._legacy(z, y, grad, weights)
        m = z.shape[0]
        return _core.regression_loss(self.kind, z, y, 1.0 / m, grad, _weights(weights, m),
                                     self._param())

    def sum_loss(self, z, y, weights=None):
        return _core.regression_loss(self.kind, z, y, 1.0, None,
                                     _weights(weights, z.shape[0]), self._param())

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class MeanSquaredError(_Regression):
    """Mean over outputs of (pred - y)^2 (Keras 'mse')."""

    name = "mean_squared_error"
    kind = "mse"

    def forward_backward(self, z, y, grad, weights=None):
        if _is_legacy(grad, weights):
            return self._legacy(z, y, grad, weights)
        if weights is None and grad is not None:     # the v1 kernel: same bits as before
            m, c = z.shape
            return _core.mse(z.reshape(-1), y.reshape(-1), 2.0 / (m * c),
                             grad.reshape(-1)) / c
        return super().forward_backward(z, y, grad, weights)

    def sum_loss(self, z, y, weights=None):
        if weights is None:
            return _core.mse(z.reshape(-1), y.reshape(-1), 1.0, None) / z.shape[1]
        return super().sum_loss(z, y, weights)


class MeanAbsoluteError(_Regression):
    """Mean over outputs of |pred - y| (Keras 'mae'); gradient sign(pred - y), 0 at 0."""

    name = "mean_absolute_error"
    kind = "mae"


class Huber(_Regression):
    """Mean over outputs of 0.5 e^2 (|e| <= delta) or delta (|e| - delta/2) (Keras)."""

    name = "huber_loss"
    kind = "huber"

    def __init__(self, delta=1.0, reduction=REDUCTION, name=None, dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        try:
            delta = float(delta)
        except (TypeError, ValueError):
            raise TypeError(f"delta must be a positive float, got {delta!r}") from None
        if not delta > 0 or not np.isfinite(delta):
            raise ValueError(f"delta must be a positive finite float, got {delta}")
        self.delta = delta

    def _param(self):
        return self.delta

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


# ------------------------------------------------------------------ registry
_CLASSES = (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
            MeanSquaredError, MeanAbsoluteError, Huber)
_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
}
_BY_CLASS = {cls.__name__: cls for cls in _CLASSES}


def serialize(loss):
    """{'class_name': ..., 'config': ...} (Keras layout), for saving."""
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config):
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a serialized loss is a dict with 'class_name' and 'config', got "
                         f"{config!r}")
    cls = _BY_CLASS.get(config["class_name"])
    if cls is None:
        raise ValueError(f"unknown loss class {config['class_name']!r}; expected one of "
                         f"{sorted(_BY_CLASS)}")
    return cls.from_config(dict(config.get("config") or {}))


def get(obj):
    """A Loss from a Loss, a Keras name ('mse', 'binary_crossentropy', 'Huber', ...), a
    Loss class, or a serialized dict."""
    if isinstance(obj, Loss):
        return obj
    if isinstance(obj, type) and issubclass(obj, Loss) and obj in _CLASSES:
        return obj()
    if isinstance(obj, dict):
        return deserialize(obj)
    if isinstance(obj, str):
        cls = _BY_NAME.get(obj.lower()) or _BY_CLASS.get(obj)
        if cls is not None:
            return cls()
    raise ValueError(f"loss must be one of {sorted(_BY_NAME)} (or a class name "
                     f"{sorted(_BY_CLASS)}), or a fastdrop.losses.Loss, got {obj!r}")

"""Losses.  Cross-entropy after a final softmax runs as the fused softmax cross-entropy
kernel on the logits (one pass: loss and gradient), which is both faster and
numerically stabler than differentiating through a separate softmax.

Interface used by the model:
  head                 'softmax' | 'sigmoid' | None: the final activation the loss fuses
                       with (the model strips it and hands the loss logits)
  prepare_targets(y, n, out_dim, name) -> array     validated, converted targets
  forward_backward(z, y, grad, weights=None) -> sum over rows of weight × row loss;
                       grad = d(sum_i w_i l_i / m)/dz  (Keras: mean over the batch)
  sum_loss(z, y, weights=None) -> the same sum, no gradient
"""
import numpy as np

from . import _core


class Loss:
    name = "loss"
    head = None
    sparse = False

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"

    def prepare_targets(self, y, n, out_dim, name="y"):
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.shape[0:1] != (n,):
            raise ValueError(f"{name} has {y.shape[0] if y.ndim else 0} samples but x has {n}")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
        if y.ndim == 1 and out_dim == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != out_dim:
            raise ValueError(f"{name} must have shape (n, {out_dim}), got {y.shape}")
        yf = np.ascontiguousarray(y, dtype=np.float32)
        if not np.isfinite(yf).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return yf

    @staticmethod
    def _weighted(total_rows, weights):
        return float(np.dot(total_rows.astype(np.float64), weights))


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot or soft targets (n, classes) of float type."""

    name = "categorical_crossentropy"
    head = "softmax"

    def prepare_targets(self, y, n, out_dim, name="y"):
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.shape[0:1] != (n,):
            raise ValueError(f"{name} has {y.shape[0] if y.ndim else 0} samples but x has {n}")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
        if y.ndim != 2 or y.shape[1] != out_dim:
            raise ValueError(f"{name} must be one-hot targets of shape (n, {out_dim}) for "
                             f"categorical_crossentropy, got shape {y.shape} (use "
                             "fastdrop.utils.to_categorical(y), or "
                             "loss='sparse_categorical_crossentropy' for integer labels)")
        yf = np.ascontiguousarray(y, dtype=np.float32)
        if not np.isfinite(yf).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return yf

    def forward_backward(self, z, y, grad, weights=None):
        m = z.shape[0]
        if weights is None:
            return _core.softmax_xent_targets(z, y, 1.0 / m, grad)
        rows = np.empty(m, np.float32)
        _core.softmax_xent_targets(z, y, 1.0 / m, grad, rows)
        grad *= weights[:, None]
        return self._weighted(rows, weights)

    def sum_loss(self, z, y, weights=None):
        if weights is None:
            return _core.softmax_xent_targets(z, y, 1.0, None)
        rows = np.empty(z.shape[0], np.float32)
        _core.softmax_xent_targets(z, y, 1.0, None, rows)
        return self._weighted(rows, weights)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels (n,)."""

    name = "sparse_categorical_crossentropy"
    head = "softmax"
    sparse = True

    def prepare_targets(self, y, n, classes, name="y"):
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.shape[0:1] != (n,):
            raise ValueError(f"{name} has {y.shape[0] if y.ndim else 0} samples but x has {n}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{name} must be integer class labels of shape (n,) for "
                             f"sparse_categorical_crossentropy, got shape {y.shape} "
                             "(use 'categorical_crossentropy' for one-hot targets)")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{name} must hold integer class labels, got non-integer "
                                 "values")
        elif y.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        yi = y.astype(np.int64)
        if yi.min() < 0 or yi.max() >= classes:
            raise ValueError(f"{name} labels must be in [0, {classes}) for {classes} "
                             f"classes, got values in [{yi.min()}, {yi.max()}]")
        return np.ascontiguousarray(yi)

    def forward_backward(self, z, y, grad, weights=None):
        m = z.shape[0]
        if weights is None:
            return _core.softmax_xent_labels(z, y, 1.0 / m, grad)
        rows = np.empty(m, np.float32)
        _core.softmax_xent_labels(z, y, 1.0 / m, grad, rows)
        grad *= weights[:, None]
        return self._weighted(rows, weights)

    def sum_loss(self, z, y, weights=None):
        if weights is None:
            return _core.softmax_xent_labels(z, y, 1.0, None)
        rows = np.empty(z.shape[0], np.float32)
        _core.softmax_xent_labels(z, y, 1.0, None, rows)
        return self._weighted(rows, weights)


class MeanSquaredError(Loss):
    """Mean over outputs of (pred - y)², averaged over the batch (Keras 'mse')."""

    name = "mean_squared_error"

    def forward_backward(self, pred, y, grad, weights=None):
        m, c = pred.shape
        if weights is None:
            return _core.mse(pred.reshape(-1), y.reshape(-1), 2.0 / (m * c),
                             grad.reshape(-1)) / c
        d = pred.astype(np.float64) - y
        rows = (d * d).mean(1)
        grad[...] = (2.0 / (m * c)) * d * weights[:, None]
        return float(rows @ weights)

    def sum_loss(self, pred, y, weights=None):
        if weights is None:
            return _core.mse(pred.reshape(-1), y.reshape(-1), 1.0, None) / pred.shape[1]
        d = pred.astype(np.float64) - y
        return float((d * d).mean(1) @ weights)


_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(obj):
    if isinstance(obj, Loss):
        return obj
    if isinstance(obj, str) and obj.lower() in _BY_NAME:
        return _BY_NAME[obj.lower()]()
    raise ValueError(f"loss must be one of {sorted(_BY_NAME)} or a fastdrop.losses.Loss, "
                     f"got {obj!r}")

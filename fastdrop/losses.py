"""Losses.  Cross-entropy after a final softmax runs as the fused softmax cross-entropy
kernel on the logits (one pass: mean loss and gradient), which is both faster and
numerically stabler than differentiating through a separate softmax."""
import numpy as np

from . import _core


class Loss:
    name = "loss"
    needs_softmax = False   # the model's last activation must be softmax (fused)
    sparse = False

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot or soft targets (n, classes) of float type."""

    name = "categorical_crossentropy"
    needs_softmax = True

    def forward_backward(self, logits, y, m, grad):
        """Sum of row losses over the m rows; writes grad = (softmax - y)/m."""
        return _core.softmax_xent_targets(logits, y, 1.0 / m, grad)

    def sum_loss(self, logits, y):
        return _core.softmax_xent_targets(logits, y, 1.0, None)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels (n,)."""

    name = "sparse_categorical_crossentropy"
    needs_softmax = True
    sparse = True

    def forward_backward(self, logits, y, m, grad):
        return _core.softmax_xent_labels(logits, y, 1.0 / m, grad)

    def sum_loss(self, logits, y):
        return _core.softmax_xent_labels(logits, y, 1.0, None)


class MeanSquaredError(Loss):
    """Mean over outputs of (pred - y)², averaged over the batch (Keras 'mse')."""

    name = "mean_squared_error"

    def forward_backward(self, pred, y, m, grad):
        c = pred.shape[1]
        return _core.mse(pred.reshape(-1), y.reshape(-1), 2.0 / (m * c),
                         grad.reshape(-1)) / c

    def sum_loss(self, pred, y):
        return _core.mse(pred.reshape(-1), y.reshape(-1), 1.0, None) / pred.shape[1]


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

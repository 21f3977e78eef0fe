"""Small helpers users of Keras expect."""
import numpy as np


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer labels (n,) into (n, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of integer labels, got shape {y.shape}")
    if y.size and (y.dtype.kind not in "iu" and not np.all(y == np.round(y))):
        raise ValueError("y must hold integer labels")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError("y must hold non-negative labels")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}")
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out

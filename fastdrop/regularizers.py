"""Weight penalties added to the loss (Keras semantics): ``l1 * sum|w| + l2 * sum(w²)``.
The gradient ``l1*sign(w) + 2*l2*w`` is added in one fused C pass."""
import math
import numbers

import numpy as np


class Regularizer:
    """L1/L2 penalty on a weight tensor."""

    def __init__(self, l1=0.0, l2=0.0):
        for name, v in (("l1", l1), ("l2", l2)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.l1 = float(l1)
        self.l2 = float(l2)

    def __call__(self, w):
        w64 = np.asarray(w, np.float64).ravel()
        return self.l1 * float(np.abs(w64).sum()) + self.l2 * float(w64 @ w64)

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"Regularizer(l1={self.l1}, l2={self.l2})"


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)


class L1L2(Regularizer):
    pass


def l1(l1=0.01):
    return Regularizer(l1=l1)


def l2(l2=0.01):
    return Regularizer(l2=l2)


def l1_l2(l1=0.01, l2=0.01):
    return Regularizer(l1=l1, l2=l2)


def get(obj):
    if obj is None or isinstance(obj, Regularizer):
        return obj
    if isinstance(obj, dict):
        return Regularizer(**obj)
    if obj in ("l1", "l2", "l1_l2"):
        return {"l1": l1, "l2": l2, "l1_l2": l1_l2}[obj]()
    raise ValueError(f"kernel_regularizer must be a fastdrop.regularizers object, 'l1', "
                     f"'l2', 'l1_l2' or None, got {obj!r}")


def serialize(obj):
    """The config of a regularizer (None for None), as ``get`` accepts it back."""
    return None if obj is None else obj.get_config()

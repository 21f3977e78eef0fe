"""The public kernel functions of fastdrop.

Every function takes and returns NumPy ``float32`` arrays in C order.  Arguments of the
wrong dtype, layout, shape or value raise ``TypeError`` or ``ValueError`` naming the
argument; nothing is converted silently (integer labels are the one exception: any
integer dtype is accepted and widened to int64, which is lossless).  All kernels run
with the GIL released, on the SIMD path chosen at import (``fastdrop.cpu_info()``), across
``fastdrop.get_num_threads()`` threads, and give bitwise identical results for any thread
count.
"""
import numbers

import numpy as np

from . import _core
from . import _validate as V

__all__ = [
    "gemm", "relu", "relu_backward", "bias_add", "softmax", "softmax_cross_entropy",
    "dropout", "dropout_backward", "dropout_mask", "mask_nbytes",
]


def _out(out, name, shape):
    if out is None:
        return np.empty(shape, dtype=np.float32)
    return V.out_array(out, name, shape)


def _flag(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return bool(v)


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """General matrix multiply: ``out = alpha * op(a) @ op(b) + beta * out``.

    Parameters
    ----------
    a : float32 array, shape (m, k), or (k, m) when ``trans_a``
    b : float32 array, shape (k, n), or (n, k) when ``trans_b``
    out : float32 array (m, n), optional.  Required when ``beta != 0`` (it is read);
        with ``beta == 0`` its contents are never read (NaN there does not propagate).
        Must not overlap ``a`` or ``b``.
    trans_a, trans_b : bool — use the transpose of a / b (no copy is made).
    alpha, beta : finite floats.

    Returns ``out`` (m, n) float32.  Packed, cache-blocked, register-blocked SGEMM
    (BLIS-style); K is never split across threads.
    """
    V.float32_array(a, "a", ndim=2)
    V.float32_array(b, "b", ndim=2)
    trans_a = _flag(trans_a, "trans_a")
    trans_b = _flag(trans_b, "trans_b")
    alpha = V.finite_scalar(alpha, "alpha")
    beta = V.finite_scalar(beta, "beta")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"inner dimensions differ: op(a) is {m}x{k} but op(b) is {kb}x{n} "
                         f"(a.shape={a.shape}, b.shape={b.shape}, trans_a={trans_a}, "
                         f"trans_b={trans_b})")
    if out is None:
        if beta != 0.0:
            raise ValueError("out is required when beta != 0 (it is read)")
        out = np.empty((m, n), dtype=np.float32)
    else:
        V.out_array(out, "out", (m, n))
        V.no_overlap(out, "out", a, "a")
        V.no_overlap(out, "out", b, "b")
    _core.gemm(a, b, out, trans_a, trans_b, alpha, beta)
    return out


def relu(x, out=None):
    """ReLU: ``out = max(x, 0)`` elementwise; any shape; ``out`` may be ``x`` (in place)."""
    V.float32_array(x, "x")
    out = _out(out, "out", x.shape)
    _core.relu(x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(grad_out, y, out=None):
    """Gradient of ReLU: ``out = grad_out where y > 0 else 0``; ``y`` is relu's output."""
    V.float32_array(grad_out, "grad_out")
    V.float32_array(y, "y")
    if y.shape != grad_out.shape:
        raise ValueError(f"y must have the shape of grad_out {grad_out.shape}, got {y.shape}")
    out = _out(out, "out", grad_out.shape)
    _core.relu_backward(grad_out.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


def bias_add(x, bias, out=None):
    """``out = x + bias`` with bias (n,) broadcast over the rows of x (m, n)."""
    V.float32_array(x, "x", ndim=2)
    V.float32_array(bias, "bias", ndim=1)
    if bias.shape[0] != x.shape[1]:
        raise ValueError(f"bias must have shape ({x.shape[1]},), got {bias.shape}")
    out = _out(out, "out", x.shape)
    _core.bias_add(x, bias, out)
    return out


def softmax(x, out=None):
    """Row-wise softmax of x (n, classes), numerically stable for any magnitude."""
    V.float32_array(x, "x", ndim=2)
    out = _out(out, "out", x.shape)
    _core.softmax(x, out)
    return out


def _labels(labels, logits):
    n, c = logits.shape
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy.ndarray, got {type(labels).__name__}")
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":  # integer class indices (bool is kind "b")
            raise TypeError(f"labels of shape (n,) must be integer class indices, "
                            f"got dtype {labels.dtype}")
        if labels.shape[0] != n:
            raise ValueError(f"labels must have length {n} (rows of logits), "
                             f"got {labels.shape[0]}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"labels must be in [0, {c}) for {c} classes, "
                             f"got values in [{lo}, {hi}]")
        return np.ascontiguousarray(labels, dtype=np.int64), None
    if labels.ndim == 2:
        V.float32_array(labels, "labels", ndim=2)
        if labels.shape != logits.shape:
            raise ValueError(f"labels (targets) must have the shape of logits {logits.shape}, "
                             f"got {labels.shape}")
        return None, labels
    raise ValueError(f"labels must be (n,) class indices or (n, classes) targets, "
                     f"got shape {labels.shape}")


def softmax_cross_entropy(logits, labels):
    """Fused, numerically stable softmax cross-entropy.

    logits : float32 (n, classes)
    labels : integer class indices (n,) in [0, classes), or float32 one-hot / soft
             targets (n, classes)

    Returns ``(mean_loss, grad_logits)``: the mean over rows of
    ``-sum(target * log_softmax(logits))`` (a Python float) and
    ``grad_logits = (softmax(logits) - target) / n`` (float32 (n, classes)).
    Stable for logits of any finite magnitude (max-subtraction, log-sum-exp).
    """
    V.float32_array(logits, "logits", ndim=2)
    idx, targets = _labels(labels, logits)
    n = logits.shape[0]
    grad = np.empty_like(logits)
    if idx is not None:
        total = _core.softmax_xent_labels(logits, idx, 1.0 / n, grad)
    else:
        total = _core.softmax_xent_targets(logits, targets, 1.0 / n, grad)
    return total / n, grad


def mask_nbytes(n):
    """Bytes of a bit-packed dropout mask for n elements: ``(n + 7) // 8``."""
    return (int(n) + 7) // 8


def dropout(x, rate, seed, *, out=None):
    """Inverted dropout: ``y = x / (1 - rate)`` where kept, ``0`` where dropped.

    x : float32 array, any shape, C-contiguous
    rate : float in [0, 1) — the fraction dropped (Keras/PyTorch convention)
    seed : int in [0, 2**64).  The keep decision of element i depends only on
           (seed, i): identical for every thread count and SIMD path, and reproduced
           bit for bit by ``fastdrop.reference.dropout_mask``.
    out : float32 array of x's shape, optional (may be x itself: in place)

    Returns ``(y, mask)`` with mask a uint8 array of ``(x.size + 7) // 8`` bytes, bit j
    (little bit order, as ``numpy.packbits(keep.ravel(), bitorder="little")``) set iff
    element j was kept.
    """
    V.float32_array(x, "x")
    rate = V.rate(rate)
    seed = V.seed(seed)
    out = _out(out, "out", x.shape)
    mask = np.empty(mask_nbytes(x.size), dtype=np.uint8)
    _core.dropout_forward(x.reshape(-1), out.reshape(-1), seed, rate, mask)
    return out, mask


def _mask(mask, n):
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy.ndarray of dtype uint8, got {type(mask).__name__}")
    if mask.dtype != np.uint8:
        raise TypeError(f"mask must have dtype uint8, got {mask.dtype}")
    if mask.ndim != 1 or mask.shape[0] != mask_nbytes(n):
        raise ValueError(f"mask must have shape ({mask_nbytes(n)},) for {n} elements, "
                         f"got {mask.shape}")
    if not mask.flags.c_contiguous:
        raise ValueError("mask must be C-contiguous")
    return mask


def dropout_backward(grad_out, mask, rate, out=None):
    """Gradient of inverted dropout: ``out = grad_out / (1 - rate)`` where the mask bit is
    set, else 0.  ``mask`` and ``rate`` are those of the forward call."""
    V.float32_array(grad_out, "grad_out")
    _mask(mask, grad_out.size)
    rate = V.rate(rate)
    out = _out(out, "out", grad_out.shape)
    _core.dropout_apply(grad_out.reshape(-1), mask, out.reshape(-1), float(1.0 / (1.0 - rate)))
    return out


def dropout_mask(n, rate, seed):
    """The bit-packed keep mask that ``dropout`` would use for n elements."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rate = V.rate(rate)
    seed = V.seed(seed)
    mask = np.empty(mask_nbytes(n), dtype=np.uint8)
    _core.dropout_mask(int(n), seed, rate, mask)
    return mask

"""Argument checks shared by the public kernel API and the model engine.

Every check raises TypeError (wrong type/dtype/layout) or ValueError (wrong shape or
value) with a message that names the argument.  Nothing is converted silently.
"""
import math
import numbers

import numpy as np


def float32_array(x, name, ndim=None, allow_empty=False):
    """Check that x is a C-contiguous float32 ndarray (optionally of a given ndim)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of dtype float32, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {x.shape}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    return x


def out_array(out, name, shape, writeable=True):
    """Check a user-supplied output buffer: float32, C-contiguous, exact shape, writeable."""
    float32_array(out, name, allow_empty=True)
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if writeable and not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out


def finite_scalar(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def rate(v, name="rate"):
    """A dropout rate: real, 0 <= rate < 1, not NaN."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(v).__name__}")
    v = float(v)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {v}")
    return v


def seed(v, name="seed"):
    """A seed: a Python or NumPy integer in [0, 2**64)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    v = int(v)
    if not (0 <= v < 2**64):
        raise ValueError(f"{name} must be in [0, 2**64), got {v}")
    return v


def positive_int(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    v = int(v)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def no_overlap(a, name_a, b, name_b):
    """Reject an output that partly overlaps an input (exact aliasing is checked by callers)."""
    if np.shares_memory(a, b):
        raise ValueError(f"{name_a} must not overlap {name_b}")

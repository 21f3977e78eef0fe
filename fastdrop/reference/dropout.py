"""NumPy reference of fastdrop's dropout: the test oracle and the benchmark baseline.

Bit-exact with the C kernels (csrc/rng.h, csrc/kernels/dropout*.c).  The contract:

* The flattened tensor (C order) is cut into blocks of ``BLOCK`` = 4096 elements; block
  ``b`` has ``LANES`` = 16 xoshiro256+ streams, and element ``j`` of the block is drawn by
  lane ``j % 16`` at step ``j // 16``.
* Stream ``s = b*16 + lane`` starts from the state words
  ``w[i] = mix(mix(seed) + (4*s + i + 1) * 0x9E3779B97F4A7C15)``, ``i = 0..3``, where
  ``mix`` is the splitmix64 output function (all arithmetic modulo 2**64).
* A draw is ``u = (w0 + w3) >> 32`` (xoshiro256+, high 32 bits only); the element is
  dropped iff ``u < dropout_threshold(rate)``.
* Inverted dropout: kept elements are multiplied by ``float32(1 / (1 - rate))`` (the
  division in double, then rounded), dropped ones are ``+0.0``.
* The mask is ``numpy.packbits(keep.ravel(), bitorder="little")``: ``(n + 7) // 8`` bytes,
  bit ``j`` set iff element ``j`` is kept, pad bits zero.

Everything is vectorised over the streams of all blocks: one NumPy pass per step (256
steps for any tensor of at least one full block).  ``fastdrop.reference`` re-exports
these names.
"""
import math

import numpy as np

__all__ = ["BLOCK", "LANES", "dropout_threshold", "dropout_scale", "dropout_keep",
           "dropout_mask", "dropout", "dropout_backward"]

BLOCK = 4096
LANES = 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _check_rate(rate):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # also rejects NaN
        raise ValueError(f"rate must satisfy 0 <= rate < 1, got {rate!r}")
    return rate


def _check_seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= _MASK64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def _mix(z):
    """splitmix64 output function on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def dropout_threshold(rate):
    """The 32-bit drop threshold of `rate` (0 <= rate < 1): min(floor(rate * 2**32), 2**32 - 1).

    An element is dropped iff the high 32 bits of its draw are below it; rate 0 -> 0.
    """
    rate = _check_rate(rate)
    return min(math.floor(rate * 4294967296.0), 0xFFFFFFFF)


def dropout_scale(rate):
    """float32(1 / (1 - rate)): the factor applied to kept elements."""
    return np.float32(1.0 / (1.0 - _check_rate(rate)))


def dropout_keep(n, seed, rate):
    """Keep decisions of a tensor of `n` elements: bool array (n,), True = kept."""
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seed = _check_seed(seed)
    threshold = np.uint64(dropout_threshold(rate) << 32)
    if n == 0:
        return np.zeros(0, dtype=bool)
    nblocks = -(-n // BLOCK)
    steps = -(-min(n, BLOCK) // LANES)
    key = np.uint64(_mix(np.array([seed], dtype=np.uint64))[0])
    stream = np.arange(nblocks * LANES, dtype=np.uint64)
    s0, s1, s2, s3 = (_mix(key + (np.uint64(4) * stream + np.uint64(i + 1)) * _GOLDEN)
                      for i in range(4))
    keep = np.empty((steps, nblocks * LANES), dtype=bool)
    r = np.empty_like(s0)
    t = np.empty_like(s0)
    for k in range(steps):
        np.add(s0, s3, out=r)
        np.greater_equal(r, threshold, out=keep[k])  # (r >> 32) >= thr <=> r >= thr << 32
        np.left_shift(s1, np.uint64(17), out=t)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        np.bitwise_or(s3 << np.uint64(45), s3 >> np.uint64(19), out=s3)
    # keep[step, block*LANES + lane] -> element block*BLOCK + step*LANES + lane
    keep = keep.reshape(steps, nblocks, LANES).transpose(1, 0, 2)
    return keep.reshape(-1)[:n].copy()


def dropout_mask(n, seed, rate):
    """Bit-packed keep mask of a tensor of `n` elements: uint8 array ((n + 7) // 8,)."""
    return np.packbits(dropout_keep(n, seed, rate), bitorder="little")


def _apply(x, keep, rate):
    scale = dropout_scale(rate)
    return np.where(keep.reshape(x.shape), x * scale, np.float32(0.0)).astype(np.float32,
                                                                             copy=False)


def _check_f32(name, a):
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    return a


def dropout(x, rate, seed):
    """Inverted dropout of float32 `x` (any shape): returns (y, mask).

    y = x * float32(1/(1-rate)) where kept, 0 where dropped (same shape as x, float32);
    mask: uint8 ((x.size + 7) // 8,), bit j of the C-order flattening set iff kept.
    """
    x = _check_f32("x", x)
    keep = dropout_keep(x.size, seed, rate)
    return _apply(x, keep, rate), np.packbits(keep, bitorder="little")


def dropout_backward(grad, mask, rate):
    """Gradient through dropout: grad * float32(1/(1-rate)) where the mask bit is set, else 0.

    grad: float32, any shape; mask: uint8 ((grad.size + 7) // 8,) from `dropout`.
    """
    grad = _check_f32("grad", grad)
    mask = np.asarray(mask)
    if mask.dtype != np.uint8 or mask.size != (grad.size + 7) // 8:
        raise ValueError(f"mask must be uint8 of {(grad.size + 7) // 8} bytes, "
                         f"got {mask.dtype} of {mask.size}")
    keep = np.unpackbits(mask.reshape(-1), count=grad.size, bitorder="little").view(bool)
    return _apply(grad, keep, rate)

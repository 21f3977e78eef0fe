"""Weight initialisers (Keras names and formulas).  Each is a callable
``init(shape, rng) -> float32 array`` with ``rng`` a ``numpy.random.Generator``;
fan_in/fan_out of a Dense kernel (in, out) are in and out."""
import numpy as np


def _fans(shape):
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) > 2:  # conv kernel (..., in, out): Keras multiplies by the receptive field
        rf = int(np.prod(shape[:-2]))
        return shape[-2] * rf, shape[-1] * rf
    return shape[0], shape[1]


def _truncated_normal(rng, shape, stddev):
    # Keras: normal truncated at 2 standard deviations, stddev corrected by .8796
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return (out * (stddev / 0.87962566103423978)).astype(np.float32)


def glorot_uniform(shape, rng):
    fi, fo = _fans(shape)
    limit = np.sqrt(6.0 / (fi + fo))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def glorot_normal(shape, rng):
    fi, fo = _fans(shape)
    return _truncated_normal(rng, shape, np.sqrt(2.0 / (fi + fo)))


def he_uniform(shape, rng):
    fi, _ = _fans(shape)
    limit = np.sqrt(6.0 / fi)
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def he_normal(shape, rng):
    fi, _ = _fans(shape)
    return _truncated_normal(rng, shape, np.sqrt(2.0 / fi))


def lecun_normal(shape, rng):
    fi, _ = _fans(shape)
    return _truncated_normal(rng, shape, np.sqrt(1.0 / fi))


def lecun_uniform(shape, rng):
    fi, _ = _fans(shape)
    limit = np.sqrt(3.0 / fi)
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def zeros(shape, rng=None):
    return np.zeros(shape, np.float32)


def ones(shape, rng=None):
    return np.ones(shape, np.float32)


def orthogonal(shape, rng):
    """Keras Orthogonal(gain=1): QR of a normal matrix, sign-corrected by diag(R); rows
    orthonormal when rows < cols (e.g. a recurrent kernel (u, 4u))."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(q.reshape(shape), dtype=np.float32)


def uniform(shape, rng):
    """Keras RandomUniform(-0.05, 0.05) (the Embedding default)."""
    return rng.uniform(-0.05, 0.05, shape).astype(np.float32)


_ALL = {f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal,
                                 lecun_normal, lecun_uniform, zeros, ones, orthogonal,
                                 uniform)}


def get(name):
    """The initialiser called ``name`` (e.g. 'glorot_uniform', 'he_normal', 'zeros')."""
    if callable(name):
        return name
    if not isinstance(name, str) or name not in _ALL:
        raise ValueError(f"kernel_initializer must be one of {sorted(_ALL)} or a callable, "
                         f"got {name!r}")
    return _ALL[name]


def name_of(init):
    for k, v in _ALL.items():
        if v is init:
            return k
    return None


def names():
    """The names ``get`` accepts."""
    return tuple(_ALL)

"""NumPy reference of fastdrop's losses (fastdrop.losses), float64, Keras 3 semantics.

Each function returns ``(total, grad)``: total = sum over the m rows of w_i * loss_i with
loss_i the mean over the last axis (Keras), grad = d(total / m)/d(input) — what
``Loss.forward_backward`` returns and writes.  ``w`` None means all ones; ``ls`` is
label_smoothing.  The ``*_value`` functions give the total alone, for finite differences.
"""
import numpy as np

EPSILON = 1e-7
# the clip bounds as Keras has them in float32: [1e-7, 1 - 1e-7] rounded to float32
LO = float(np.float32(EPSILON))
HI = float(np.float32(1.0) - np.float32(EPSILON))


def _w(w, m):
    return np.ones(m) if w is None else np.asarray(w, np.float64).reshape(-1)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def smooth_categorical(t, ls):
    t = np.asarray(t, np.float64)
    return t * (1.0 - ls) + ls / t.shape[1]


def smooth_binary(t, ls):
    return np.asarray(t, np.float64) * (1.0 - ls) + 0.5 * ls


def onehot(labels, c):
    t = np.zeros((len(labels), c))
    t[np.arange(len(labels)), np.asarray(labels)] = 1.0
    return t


# ------------------------------------------------------------------ logits
def categorical_crossentropy(z, t, w=None, ls=0.0):
    z = np.asarray(z, np.float64)
    m = z.shape[0]
    t = smooth_categorical(t, ls)
    wr = _w(w, m)
    rows = -(t * _log_softmax(z)).sum(axis=1)
    p = np.exp(_log_softmax(z))
    grad = (p * t.sum(axis=1, keepdims=True) - t) * (wr / m)[:, None]
    return float((wr * rows).sum()), grad


def sparse_categorical_crossentropy(z, labels, w=None):
    return categorical_crossentropy(z, onehot(labels, np.shape(z)[1]), w)


def binary_crossentropy(z, t, w=None, ls=0.0):
    """On logits: max(z, 0) - z t + log(1 + exp(-|z|)), gradient sigmoid(z) - t."""
    z = np.asarray(z, np.float64)
    m, c = z.shape
    t = smooth_binary(t, ls)
    wr = _w(w, m)
    el = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    grad = (_sigmoid(z) - t) * (wr / (m * c))[:, None]
    return float((wr * el.mean(axis=1)).sum()), grad


# ----------------------------------------------------------- probabilities
def binary_crossentropy_probs_value(p, t, w=None, ls=0.0):
    """Keras: p clipped to [eps, 1 - eps], -(t log p + (1 - t) log(1 - p))."""
    p = np.clip(np.asarray(p, np.float64), LO, HI)
    t = smooth_binary(t, ls)
    el = -(t * np.log(p) + (1 - t) * np.log1p(-p))
    return float((_w(w, p.shape[0]) * el.mean(axis=1)).sum())


def categorical_crossentropy_probs_value(p, t, w=None, ls=0.0):
    """Keras: p / sum(p), clipped to [eps, 1 - eps], -sum t log p."""
    p = np.asarray(p, np.float64)
    q = np.clip(p / p.sum(axis=1, keepdims=True), LO, HI)
    t = smooth_categorical(t, ls)
    return float((_w(w, p.shape[0]) * -(t * np.log(q)).sum(axis=1)).sum())


# ------------------------------------------------------------- regression
def mean_squared_error(p, t, w=None):
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    m, c = p.shape
    wr = _w(w, m)
    e = p - t
    return float((wr * (e * e).mean(axis=1)).sum()), 2 * e * (wr / (m * c))[:, None]


def mean_absolute_error(p, t, w=None):
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    m, c = p.shape
    wr = _w(w, m)
    e = p - t
    return float((wr * np.abs(e).mean(axis=1)).sum()), np.sign(e) * (wr / (m * c))[:, None]


def huber(p, t, w=None, delta=1.0):
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    m, c = p.shape
    wr = _w(w, m)
    e = p - t
    ae = np.abs(e)
    el = np.where(ae <= delta, 0.5 * e * e, delta * ae - 0.5 * delta * delta)
    g = np.where(ae <= delta, e, delta * np.sign(e))
    return float((wr * el.mean(axis=1)).sum()), g * (wr / (m * c))[:, None]


def numeric_grad(f, x, h=1e-6):
    """Central differences of the float64 function f at x (float64), / nothing."""
    x = np.asarray(x, np.float64)
    g = np.empty_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g

"""Plain NumPy reference implementations of every fastdrop kernel.

These are the test oracle and the benchmark baseline: written for clarity, computed
in float64 where that makes them a better oracle, returned as float32.  The dropout
functions reproduce fastdrop's mask bit for bit (see ``reference.dropout``).
"""
import numpy as np

from .dropout import (  # noqa: F401  (re-exported)
    dropout,
    dropout_backward,
    dropout_keep,
    dropout_mask,
    dropout_threshold,
)


def gemm(a, b, out=None, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """alpha * op(a) @ op(b) + beta * out, computed in float64, returned as float32."""
    A = np.asarray(a, np.float64)
    B = np.asarray(b, np.float64)
    if trans_a:
        A = A.T
    if trans_b:
        B = B.T
    r = alpha * (A @ B)
    if beta != 0.0:
        r = r + beta * np.asarray(out, np.float64)
    return r.astype(np.float32)


def gemm_epilogue(z, bias=None, relu=False, mask=None, mask_scale=1.0):
    """The fused GEMM epilogue: (+ bias) (relu) (* mask ? scale : 0), elementwise in float32."""
    z = np.asarray(z, np.float32).copy()
    if bias is not None:
        z += bias
    if relu:
        z = np.maximum(z, np.float32(0))
    if mask is not None:
        keep = np.unpackbits(mask, count=z.size, bitorder="little").reshape(z.shape).astype(bool)
        z = np.where(keep, z * np.float32(mask_scale), np.float32(0))
    return z


def relu(x):
    return np.maximum(x, np.float32(0)).astype(np.float32)


def relu_backward(grad_out, y):
    return np.where(y > 0, grad_out, np.float32(0)).astype(np.float32)


def bias_add(x, bias):
    return (x + bias).astype(np.float32)


def softmax(x):
    z = np.asarray(x, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def log_softmax(x):
    z = np.asarray(x, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels):
    """(mean loss, (softmax - target) / n) for integer labels (n,) or targets (n, classes)."""
    logits = np.asarray(logits)
    n, c = logits.shape
    labels = np.asarray(labels)
    if labels.ndim == 1:
        t = np.zeros((n, c), np.float64)
        t[np.arange(n), labels.astype(np.int64)] = 1.0
    else:
        t = labels.astype(np.float64)
    ls = log_softmax(logits)
    loss = float(-(t * ls).sum() / n)
    grad = ((np.exp(ls) - t) / n).astype(np.float32)
    return loss, grad


def mse(pred, target):
    """(mean squared error over all elements, gradient (2/size)(pred - target))."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return float((d * d).mean()), (2.0 * d / d.size).astype(np.float32)


def sgd_update(w, g, vel, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """Keras SGD step (decoupled weight decay); returns new (w, vel)."""
    w = w.astype(np.float32)
    g = g.astype(np.float32)
    w = w - np.float32(lr * weight_decay) * w
    if momentum == 0.0:
        return (w - np.float32(lr) * g).astype(np.float32), vel
    v = np.float32(momentum) * vel - np.float32(lr) * g
    if nesterov:
        return (w + np.float32(momentum) * v - np.float32(lr) * g).astype(np.float32), v
    return (w + v).astype(np.float32), v


def adam_update(w, g, m, v, lr, t, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0):
    """Keras Adam/AdamW step t (1-based); returns new (w, m, v)."""
    f = np.float32
    lr_t = lr * np.sqrt(1 - f(beta2) ** t) / (1 - f(beta1) ** t)
    m = m + (g - m) * (f(1) - f(beta1))
    v = v + (g * g - v) * (f(1) - f(beta2))
    w = w - lr * weight_decay * w - lr_t * m / (np.sqrt(v) + eps)
    return w.astype(np.float32), m.astype(np.float32), v.astype(np.float32)


def maxnorm(w, max_value):
    """Keras MaxNorm on a Dense kernel (in, out): clip each column's L2 norm."""
    norms = np.sqrt((np.asarray(w, np.float64) ** 2).sum(axis=0, keepdims=True))
    desired = np.clip(norms, 0, max_value)
    return (w * (desired / (1e-7 + norms))).astype(np.float32)


# ------------------------------------------------------------ whole-model reference
def mlp_loss_and_grads(weights, x, labels, relu, keep=None, rates=None, dtype=np.float64,
                       sample_weight=None):
    """Loss and gradients of an MLP ``Dense -> (relu) -> (dropout) -> ... -> Dense ->
    softmax cross-entropy``, in plain NumPy.

    weights : [W0 (in, h0), b0, W1, b1, ...] (Keras order)
    labels  : integer class labels (n,)
    relu    : per hidden Dense, whether ReLU follows it
    keep    : per hidden Dense, a boolean keep mask (n, units) or None (no dropout)
    rates   : per hidden Dense, the dropout rate (scale = float32(1/(1-rate)))
    sample_weight : (n,) per-sample loss weights; the loss is the mean over the batch of
              weight × loss (Keras 3's 'sum_over_batch_size')
    Returns (mean loss, [dW0, db0, ...]) in ``dtype``.
    """
    ws = [np.asarray(w, dtype) for w in weights]
    n_layers = len(ws) // 2
    keep = keep or [None] * (n_layers - 1)
    rates = rates or [0.0] * (n_layers - 1)
    h = np.asarray(x, dtype)
    cache = []
    for i in range(n_layers - 1):
        z = h @ ws[2 * i] + ws[2 * i + 1]
        a = np.maximum(z, 0) if relu[i] else z
        if keep[i] is not None:
            scale = dtype(np.float32(1.0 / (1.0 - rates[i])))
            a = np.where(keep[i], a * scale, 0)
        cache.append((h, z))
        h = a
    logits = h @ ws[-2] + ws[-1]
    n = logits.shape[0]
    ls = log_softmax(logits)
    w = np.ones(n, dtype) if sample_weight is None else np.asarray(sample_weight, dtype)
    loss = float(-(w * ls[np.arange(n), labels]).sum() / n)
    d = np.exp(ls)
    d[np.arange(n), labels] -= 1.0
    d *= (w / n)[:, None]
    grads = [None] * len(ws)
    grads[-2] = h.T @ d
    grads[-1] = d.sum(0)
    d = d @ ws[-2].T
    for i in range(n_layers - 2, -1, -1):
        hin, z = cache[i]
        if keep[i] is not None:
            d = np.where(keep[i], d * dtype(np.float32(1.0 / (1.0 - rates[i]))), 0)
        if relu[i]:
            d = np.where(z > 0, d, 0)
        grads[2 * i] = hin.T @ d
        grads[2 * i + 1] = d.sum(0)
        d = d @ ws[2 * i].T
    return loss, [g.astype(dtype) for g in grads]


class ReferenceTrainer:
    """A pure-NumPy trainer of a dropout MLP (ReLU hidden layers, dropout after each,
    softmax cross-entropy, Adam): the baseline that fastdrop's training step is
    benchmarked against.  Masks come from the bit-exact reference dropout generator."""

    def __init__(self, sizes, rate=0.5, learning_rate=1e-3, seed=0):
        rng = np.random.default_rng(seed)
        self.weights = []
        for fi, fo in zip(sizes[:-1], sizes[1:]):
            lim = np.sqrt(6.0 / (fi + fo))
            self.weights += [rng.uniform(-lim, lim, (fi, fo)).astype(np.float32),
                             np.zeros(fo, np.float32)]
        self.rate = rate
        self.lr = learning_rate
        self.m = [np.zeros_like(w) for w in self.weights]
        self.v = [np.zeros_like(w) for w in self.weights]
        self.t = 0
        self.seed = seed

    def train_step(self, x, labels):
        n_hidden = len(self.weights) // 2 - 1
        keep = [dropout_keep(x.shape[0] * self.weights[2 * i].shape[1],
                             self.seed + 1000 * self.t + i, self.rate)
                .reshape(x.shape[0], -1) if self.rate > 0 else None
                for i in range(n_hidden)]
        loss, grads = mlp_loss_and_grads(self.weights, x, labels, [True] * n_hidden, keep,
                                         [self.rate] * n_hidden, dtype=np.float32)
        self.t += 1
        for i, g in enumerate(grads):
            self.weights[i], self.m[i], self.v[i] = adam_update(
                self.weights[i], g, self.m[i], self.v[i], self.lr, self.t)
        return loss

    def predict(self, x):
        h = np.asarray(x, np.float32)
        for i in range(0, len(self.weights) - 2, 2):
            h = np.maximum(h @ self.weights[i] + self.weights[i + 1], 0)
        return softmax(h @ self.weights[-2] + self.weights[-1])


# ------------------------------------------------------------------ dropout variants
def gaussian_noise(n, seed, stddev):
    """NumPy mirror of fd_gaussian_noise_f32: 1 + stddev*N(0,1), block b of 4096 elements
    drawn from xoshiro256+ stream b (seeded as dropout stream b), Box–Muller on pairs."""
    from .dropout import _GOLDEN, _mix
    n = int(n)
    block = 4096
    nb = -(-n // block)
    key = np.uint64(_mix(np.array([seed], dtype=np.uint64))[0])
    stream = np.arange(nb, dtype=np.uint64)
    s0, s1, s2, s3 = (_mix(key + (np.uint64(4) * stream + np.uint64(i + 1)) * _GOLDEN)
                      for i in range(4))
    draws = np.empty((block, nb), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(block):
            draws[k] = s0 + s3
            t = s1 << np.uint64(17)
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))
    d = draws.T.reshape(nb, block // 2, 2)
    u1 = ((d[..., 0] >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0 ** -53
    u2 = (d[..., 1] >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.stack([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=-1)
    return (1.0 + stddev * z.reshape(-1)[:n]).astype(np.float32)


def selu(x):
    x = np.asarray(x, np.float64)
    lam, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    return np.where(x > 0, lam * x, lam * alpha * np.expm1(x)).astype(np.float32)

"""The Monte Carlo dropout loop of ``predict(x, mc_samples=T)`` (the MC mode of the
trainer's forward pass): T stochastic passes batched as T x m rows per chunk, the
deterministic prefix run once per chunk, moments accumulated per sample.
``fastdrop.uncertainty`` builds its estimates on it."""
import numbers
import os

import numpy as np

from ..engine import INFER, MC, Context


def _entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -(p * np.log(np.maximum(p, 1e-300))).sum(axis=axis)


_MC_CHUNK_BYTES = 48 << 20   # activation bytes of one batched chunk (T x m rows) ...
_MC_CHUNK_ROWS = 1024        # ... unless that gives fewer rows than plain predict's batch


def _mc_moments(model, x, mc_samples, seed, batch_size, offset=0):
    """(mean, variance, expected entropy) over ``mc_samples`` stochastic passes.

    The deterministic prefix (every stage before the first noisy one) runs once per
    chunk; its output is tiled T times (pass-major rows) and the rest runs as one MC
    batch.  Chunks are sized by activation bytes.  Masks are keyed by (seed, layer, pass,
    global sample index): the result does not depend on batch_size or on the other
    samples in x.  offset: the global index of x's first sample (a generator's batches are
    keyed by their running index: ``data_adapters.mc_moments``; a rank's shard in
    fastdrop.distributed).
    """
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, numbers.Integral) \
            or mc_samples < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    T = int(mc_samples)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    x, batch_size = model._prepare_predict(x, batch_size)
    n = x.shape[0]
    sample_shape = x.shape[1:]
    model._ensure(sample_shape, T)
    out_shape = model._bound_out
    c = int(np.prod(out_shape))
    if n == 0:
        return (np.empty((0,) + out_shape, np.float32), np.empty((0,) + out_shape, np.float32),
                np.empty((0,) + tuple(out_shape)[:-1]))
    stages = model._stages
    k = model._first_noisy
    prefix, rest = stages[:k], stages[k:]
    # the prefix runs on m rows, the rest on T*m rows: chunks sized by activation bytes
    rb = model._arena.row_bytes(stages)
    per_sample = sum(rb[:k]) + T * sum(rb[k:])
    # at least as many rows per chunk as predict's default batch: a conv stage declares
    # ~0.7 MB of buffers per row, and 48 MB alone gave chunks of 2 samples (60 rows) whose
    # per-call costs (thread wake-ups, packing) made MC 3-6x slower than T predicts
    m_chunk = batch_size or max(1, _MC_CHUNK_BYTES // per_sample, -(-_MC_CHUNK_ROWS // T))
    m_chunk = max(1, min(n, m_chunk))
    model._arena.allocate(stages, T * m_chunk,
                          capacities=[m_chunk] * k + [T * m_chunk] * (len(stages) - k))
    model._capacity = 0        # the next plain call allocates its own capacity again
    mid_shape = prefix[-1].out_shape if prefix else sample_shape
    tiled = np.empty((T * m_chunk,) + tuple(mid_shape), np.float32)
    probs = np.empty((T * m_chunk, c), np.float32)
    mean = np.empty((n, c), np.float32)
    var = np.empty((n, c), np.float32)
    R, C = model._rows
    ent = np.empty((n, R), np.float64)
    softmax_head = model._head == "softmax"
    for lo in range(0, n, m_chunk):
        hi = min(lo + m_chunk, n)
        m = hi - lo
        rows = T * m
        h, mask = model._forward(Context(INFER, m), x[lo:hi], prefix, want_mask=True)
        H = tiled[:rows]
        H.reshape((T, m) + tuple(mid_shape))[...] = h
        if mask is not None:   # a sequence mask from the prefix (Embedding(mask_zero=True))
            mask = np.tile(np.asarray(mask, bool), (T,) + (1,) * (mask.ndim - 1))
        ctx = Context(MC, rows, seed=seed, passes=T, offset=offset + lo)
        ctx.tiled = True
        out = model._forward(ctx, H, rest, mask=mask) if rest else H
        P = model._apply_head(out.reshape(rows, -1), probs[:rows]).reshape(T, m, c)
        P64 = P.astype(np.float64)
        mu = P64.mean(0)
        mean[lo:hi] = mu
        var[lo:hi] = ((P64 - mu) ** 2).mean(0)
        # entropies per distribution: the output's last axis (each step of an N-D output)
        ent[lo:hi] = _entropy(P64.reshape(T, m, R, C)).mean(0) if softmax_head else np.nan
    shape = (n,) + tuple(out_shape)
    return mean.reshape(shape), var.reshape(shape), ent.reshape((n,) + tuple(out_shape)[:-1])

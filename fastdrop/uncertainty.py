"""Monte Carlo dropout (Gal & Ghahramani, 2016): predictive uncertainty from T stochastic
forward passes with dropout left on.

``mc_predict(model, x, mc_samples=T)`` returns the mean class probabilities, their
standard deviation over passes, the predictive entropy ``H[mean_t p_t]``, the expected
entropy ``mean_t H[p_t]`` and their difference, the mutual information between the
prediction and the weights (BALD).

The T passes are batched: each chunk of inputs is run as one batch of T×m rows, so weights
are read once per chunk rather than once per pass, and masks come from the counter-keyed
generator at memory speed.  When the first layer is a Dense with no dropout on its input,
its output is the same for every pass: it is computed once and only its dropout mask
differs — MC prediction then costs *less* than T plain predictions.
"""
import numbers
import os
from dataclasses import dataclass

import numpy as np

from . import _core
from . import layers as _layers
from . import random as _random

_ROWS_PER_CHUNK = 4096   # T×m rows per batched pass: activations stay cache-friendly


@dataclass
class MCDropoutResult:
    """Per-sample results of MC dropout; arrays of shape (n, classes) or (n,)."""
    mean: np.ndarray
    std: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray


def _entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -(p * np.log(np.maximum(p, 1e-300))).sum(axis=axis)


def predictive_entropy(mean_probs):
    """Entropy (nats) of the mean predictive distribution, per sample: (n, c) -> (n,)."""
    return _entropy(mean_probs)


def mutual_information(samples):
    """BALD mutual information from per-pass probabilities (T, n, c) -> (n,):
    ``H[mean_t p_t] - mean_t H[p_t]`` (nats, >= 0)."""
    s = np.asarray(samples, np.float64)
    return _entropy(s.mean(0)) - _entropy(s).mean(0)


def _mc_moments(model, x, mc_samples, seed, batch_size):
    """(mean, variance, expected entropy) over ``mc_samples`` stochastic passes."""
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
    c = model.output_dim
    m_chunk = max(1, min(n, batch_size or max(1, _ROWS_PER_CHUNK // T)))
    cap = m_chunk * T
    model._ensure_capacity(cap)
    stages = model._stages
    first = stages[0]
    shortcut = isinstance(first, _layers.DenseStage) and first.dense.drop_connect == 0
    if shortcut:
        tiled = np.empty((cap, first.units), np.float32)
        tmask = np.empty((cap * first.units + 7) // 8, np.uint8)
    else:
        tiled = np.empty((cap, x.shape[1]), np.float32)
    probs = np.empty((cap, c), np.float32)
    mean = np.empty((n, c), np.float32)
    var = np.empty((n, c), np.float32)
    ent = np.empty(n, np.float64)
    for lo in range(0, n, m_chunk):
        hi = min(lo + m_chunk, n)
        m = hi - lo
        rows = T * m
        seeds = [_random.derive(seed, _random.KEY_MC, lo, i) for i in range(len(stages))]
        if shortcut:
            h = first.forward(x[lo:hi], m, False, 0)        # identical for every pass
            H = tiled[:rows]
            H.reshape(T, m, -1)[...] = h
            if first.dropout is not None:
                flat = H.reshape(-1)
                _core.dropout_forward(flat, flat, seeds[0], first.dropout.rate,
                                      tmask[:(flat.size + 7) // 8])
            rest = list(enumerate(stages))[1:]
        else:
            H = tiled[:rows]
            H.reshape(T, m, -1)[...] = x[lo:hi]
            rest = list(enumerate(stages))
        for i, s in rest:
            H = s.forward(H, rows, True, 0, seeds[i])
        if model._final_softmax:
            _core.softmax(H, probs[:rows])
            P = probs[:rows].reshape(T, m, c)
        else:
            P = H.reshape(T, m, c)
        P64 = P.astype(np.float64)
        mu = P64.mean(0)
        mean[lo:hi] = mu
        var[lo:hi] = ((P64 - mu) ** 2).mean(0)
        ent[lo:hi] = _entropy(P64).mean(0) if model._final_softmax else np.nan
    return mean, var, ent


def mc_predict(model, x, mc_samples=50, seed=None, batch_size=None):
    """Monte Carlo dropout prediction with uncertainty measures (see module docs).

    Returns an ``MCDropoutResult``; for a classifier (final softmax) it includes the
    predictive entropy, expected entropy and mutual information (BALD), in nats.
    """
    with model._lock:
        mean, var, exp_ent = _mc_moments(model, x, mc_samples, seed, batch_size)
    pe = predictive_entropy(mean) if model._final_softmax else np.full(mean.shape[0], np.nan)
    return MCDropoutResult(mean=mean, std=np.sqrt(var), predictive_entropy=pe,
                           expected_entropy=exp_ent,
                           mutual_information=np.maximum(pe - exp_ent, 0.0))

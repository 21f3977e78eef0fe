"""Monte Carlo dropout (Gal & Ghahramani, 2016): predictive uncertainty from T stochastic
forward passes with dropout left on.

``mc_predict(model, x, mc_samples=T)`` returns the mean class probabilities, their
standard deviation over passes, the predictive entropy ``H[mean_t p_t]``, the expected
entropy ``mean_t H[p_t]`` and their difference, the mutual information between the
prediction and the weights (BALD).

The T passes are batched: each chunk of inputs is run as one batch of T×m rows, so weights
are read once per chunk rather than once per pass, and masks come from the counter-keyed
generator at memory speed.  The deterministic prefix of the model (every stage before
the first noisy one: convolutions, BatchNorm on its moving statistics, ...) runs once per
chunk, and a first noisy Dense computes its GEMM once and only its masks differ per pass,
so MC prediction can cost *less* than T plain predictions.  BatchNormalization uses its
moving statistics in MC mode (unlike Keras's ``training=True`` trick).
"""
from dataclasses import dataclass

import numpy as np

from .models.mc import _entropy, _mc_moments  # noqa: F401



@dataclass
class MCDropoutResult:
    """Per-sample results of MC dropout; arrays of shape (n, classes) or (n,)."""
    mean: np.ndarray
    std: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray




def predictive_entropy(mean_probs):
    """Entropy (nats) of the mean predictive distribution, per sample: (n, c) -> (n,)."""
    return _entropy(mean_probs)


def mutual_information(samples):
    """BALD mutual information from per-pass probabilities (T, n, c) -> (n,):
    ``H[mean_t p_t] - mean_t H[p_t]`` (nats, >= 0)."""
    s = np.asarray(samples, np.float64)
    return _entropy(s.mean(0)) - _entropy(s).mean(0)




def mc_predict(model, x, mc_samples=50, seed=None, batch_size=None, steps=None):
    """Monte Carlo dropout prediction with uncertainty measures (see module docs).

    Returns an ``MCDropoutResult``; for a classifier (final softmax) it includes the
    predictive entropy, expected entropy and mutual information (BALD), in nats.
    x may be a generator, ``PyDataset`` or torch ``DataLoader`` of batches (each sample
    keyed by its running index: the same result as the concatenated arrays); steps: that
    many batches only.
    """
    from .models import data_adapters
    with model._lock:
        if data_adapters.is_source(x):      # a generator, PyDataset or torch DataLoader
            mean, var, exp_ent = data_adapters.mc_moments(model, x, mc_samples, seed,
                                                          batch_size, steps)
        else:
            mean, var, exp_ent = _mc_moments(model, x, mc_samples, seed, batch_size)
    pe = predictive_entropy(mean) if model._head == 'softmax' else np.full(mean.shape[:-1], np.nan)
    return MCDropoutResult(mean=mean, std=np.sqrt(var), predictive_entropy=pe,
                           expected_entropy=exp_ent,
                           mutual_information=np.maximum(pe - exp_ent, 0.0))

"""Noise layers: Dropout, GaussianDropout, AlphaDropout (identity at inference)."""
import math
import numbers

import numpy as np

from .base import Layer, rate_arg, seed_arg


class _NoiseLayer(Layer):
    """A training-time noise layer with a ``rate`` in [0, 1) and an optional ``seed``.

    The noise of each step is keyed by (seed, layer's noise index, step) — reproducible,
    different for every layer and step; with ``seed=None`` the model seed is used.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate_arg(rate)
        self.seed = seed_arg(seed)
        self.noise_index = 0

    @property
    def noisy(self):
        return self.rate > 0

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class Dropout(_NoiseLayer):
    """Inverted dropout: during training each unit is zeroed with probability ``rate``
    and the kept ones scaled by ``1/(1-rate)``; identity at inference.

    noise_shape: Keras's broadcast shape of the mask, batch axis first, e.g.
    ``(None, 1, 1, C)`` (one bit per sample and channel), ``(1, F)`` (one mask shared by
    the batch) or ``(None, 1)``.  Entries are None, 1, or the input's size on that axis.
    """
    kind = "dropout"

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(rate, seed, **kwargs)
        if noise_shape is not None:
            ns = tuple(noise_shape)
            if len(ns) < 2 or any(d is not None and (isinstance(d, bool) or
                                                     not isinstance(d, numbers.Integral) or d < 1)
                                  for d in ns):
                raise ValueError(f"noise_shape must be a tuple (batch, *sample axes) of None or "
                                 f"positive integers, e.g. (None, 1, 1, channels), got "
                                 f"{noise_shape!r}")
            noise_shape = tuple(None if d is None else int(d) for d in ns)
        self.noise_shape = noise_shape

    def compute_output_shape(self, input_shape):
        if self.noise_shape is not None:
            ns = self.noise_shape
            if len(ns) != len(input_shape) + 1 or ns[0] not in (None, 1) or any(
                    d is not None and d != 1 and d != s
                    for d, s in zip(ns[1:], input_shape)):
                raise ValueError(f"noise_shape {ns} does not fit inputs of shape "
                                 f"(batch,) + {tuple(input_shape)}")
        return tuple(input_shape)

    @property
    def elementwise(self):
        """True when the mask has one bit per element (no broadcasting)."""
        if self.noise_shape is None:
            return True
        ns = self.noise_shape
        return ns[0] is None and all(d is None or d == s
                                     for d, s in zip(ns[1:], self.input_shape))

    def mask_shape(self, in_shape):
        """(batch_shared, per-sample mask shape) for a concrete per-sample shape."""
        if self.noise_shape is None:
            return False, tuple(in_shape)
        ns = self.noise_shape
        return ns[0] == 1, tuple(s if d is None else d for d, s in zip(ns[1:], in_shape))

    @property
    def scale(self):
        return float(np.float32(1.0 / (1.0 - self.rate)))

    def make_stage(self):
        from ..engine.stages.noise import DropoutStage
        return DropoutStage(self)

    def get_config(self):
        return {**super().get_config(),
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        ns = config.get("noise_shape")
        if ns is not None and len(ns) == 2 and config.get("input_shape") is None:
            pass  # v1 (batch, features) noise shapes are already Keras-shaped
        return cls(**config)


class GaussianDropout(_NoiseLayer):
    """Multiplicative Gaussian noise N(1, rate/(1-rate)) during training (Srivastava et
    al. 2014, §10); identity at inference.  The noise is counter-keyed like dropout."""
    kind = "gaussian_dropout"

    @property
    def stddev(self):
        return math.sqrt(self.rate / (1.0 - self.rate))

    def make_stage(self):
        from ..engine.stages.noise import GaussianDropoutStage
        return GaussianDropoutStage(self)


class AlphaDropout(_NoiseLayer):
    """Dropout that keeps the mean and variance of SELU activations (Klambauer et al.
    2017): dropped units are set to SELU's negative saturation and an affine correction
    restores the moments.  Identity at inference.  Use with activation='selu' and
    kernel_initializer='lecun_normal'."""
    kind = "alpha_dropout"

    ALPHA_P = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946

    @property
    def affine(self):
        """(a, b) of the correction y = a*(x or alpha_p) + b (Keras formula)."""
        r, ap = self.rate, self.ALPHA_P
        a = ((1.0 - r) * (1.0 + r * ap * ap)) ** -0.5
        return a, -a * ap * r

    def make_stage(self):
        from ..engine.stages.noise import AlphaDropoutStage
        return AlphaDropoutStage(self)

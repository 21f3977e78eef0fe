"""Convolutional layers (Keras 3 names, arguments, defaults and weight layouts; NHWC):
Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
SpatialDropout2D, BatchNormalization — with their stages and the fusion rule

    Conv2D [+ Activation('relu') when the conv is linear] [+ Dropout | SpatialDropout2D]

-> one ``ConvStage`` (implicit GEMM with a bias/relu/mask epilogue).  Kernels are in
``csrc/nn`` (bindings ``fastdrop/_core_conv.pxi``), the oracle in
``fastdrop.reference.conv``.
"""
import numbers

import numpy as np

from .. import initializers as _initializers
from ..engine.stages.conv import (BatchNormStage, ConvBNStage, ConvStage,  # noqa: F401
                                   GlobalPoolStage, PoolStage, SpatialDropoutStage)
from .base import Layer, rate_arg, seed_arg, units_arg
from .base import initializer_config as _init_name

CONV_ACTIVATIONS = ("linear", "relu")   # fused into the epilogue; any other runs after it


# ------------------------------------------------------------------ argument helpers
def _pair(v, name, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        v = (v, v)
    try:
        t = tuple(v)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer or a tuple of 2 positive "
                         f"integers, got {v!r}") from None
    if len(t) != 2 or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or a <= 0
                          for a in t):
        raise ValueError(f"{name} must be a positive integer or a tuple of 2 positive "
                         f"integers, got {v!r}")
    return (int(t[0]), int(t[1]))


def _padding_arg(p):
    if not isinstance(p, str) or p.lower() not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {p!r}")
    return p.lower()


def _activation_name(a):
    """Any activation of ``keras.activations`` (by name or function), as Keras; relu is
    fused into the convolution's epilogue, the others run on its output buffer."""
    from .core import activation_arg
    return activation_arg(a)


def _axis_out(n, k, s, d, padding):
    """(pad_before, out) on one axis; out <= 0 when the window does not fit."""
    if padding == "same":
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        return total // 2, out
    return 0, (n - (k - 1) * d - 1) // s + 1


def _image_shape(layer, input_shape):
    s = tuple(input_shape)
    if len(s) != 3 or any(d is None for d in s):
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) expects images "
                         f"(height, width, channels) per sample (channels last), got "
                         f"per-sample shape {s}")
    return s


def _noise_index(layer):
    idx = getattr(layer, "noise_index", None)
    return 1 if idx is None else idx


# ------------------------------------------------------------------ Conv2D
class Conv2D(Layer):
    """2-D convolution, channels last.  kernel (kh, kw, in, filters), bias (filters,)."""
    kind = "conv2d"

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
                 dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, kernel_constraint=None, data_format=None,
                 name=None, input_shape=None, trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.filters = units_arg(filters, "filters")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _padding_arg(padding)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format must be 'channels_last' (NHWC), got {data_format!r}")
        if max(self.dilation_rate) > 1 and max(self.strides) > 1:
            raise ValueError(f"dilation_rate {self.dilation_rate} > 1 cannot be combined with "
                             f"strides {self.strides} > 1")
        self.activation = _activation_name(activation)
        if self.activation == "glu" and self.filters % 2:
            raise ValueError(f"activation 'glu' splits the channels in two halves: filters "
                             f"must be even, got {filters}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        from .. import constraints as _constraints
        from .. import regularizers as _regularizers
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)

    def geometry(self, input_shape, n=0):
        """(n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, oc) for the C kernels."""
        h, w, c = _image_shape(self, input_shape)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        pt, oh = _axis_out(h, kh, sh, dh, self.padding)
        pl, ow = _axis_out(w, kw, sw, dw, self.padding)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"layer {self.name!r}: kernel_size {self.kernel_size} with "
                             f"dilation_rate {self.dilation_rate} is larger than its input "
                             f"{(h, w)} (padding={self.padding!r})")
        return (int(n), h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, self.filters)

    def create_variables(self, input_shape):
        g = self.geometry(input_shape)
        self.add_weight("kernel", self.kernel_size + (g[3], self.filters),
                        self.kernel_initializer, regularizer=self.kernel_regularizer,
                        constraint=self.kernel_constraint)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def compute_output_shape(self, input_shape):
        g = self.geometry(input_shape)
        return (g[12], g[13], g[14] // 2 if self.activation == "glu" else g[14])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, kernel_size=list(self.kernel_size),
                   strides=list(self.strides), padding=self.padding,
                   dilation_rate=list(self.dilation_rate), activation=self.activation,
                   use_bias=self.use_bias,
                   kernel_initializer=_init_name(self.kernel_initializer, "kernel_initializer"),
                   bias_initializer=_init_name(self.bias_initializer, "bias_initializer"),
                   kernel_regularizer=None if self.kernel_regularizer is None
                   else self.kernel_regularizer.get_config(),
                   kernel_constraint=None if self.kernel_constraint is None
                   else self.kernel_constraint.get_config())
        return cfg

    def make_stage(self):
        from ..engine.stages.conv import _conv_act
        act = _conv_act(self)
        if isinstance(act, str):
            return ConvStage(self, relu=act == "relu")
        return ConvStage(self, act=act)


# ------------------------------------------------------------------ pooling
class _Pooling2D(Layer):
    is_max = True

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 name=None, input_shape=None, trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(strides, "strides", allow_none=True) or self.pool_size
        self.padding = _padding_arg(padding)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format must be 'channels_last' (NHWC), got {data_format!r}")

    def geometry(self, input_shape, n=0):
        """(n, h, w, c, ph, pw, sh, sw, pt, pl, oh, ow) for the C kernels."""
        h, w, c = _image_shape(self, input_shape)
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pt, oh = _axis_out(h, ph, sh, 1, self.padding)
        pl, ow = _axis_out(w, pw, sw, 1, self.padding)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"layer {self.name!r}: pool_size {self.pool_size} is larger than "
                             f"its input {(h, w)} (padding={self.padding!r})")
        return (int(n), h, w, c, ph, pw, sh, sw, pt, pl, oh, ow)

    def compute_output_shape(self, input_shape):
        g = self.geometry(input_shape)
        return (g[10], g[11], g[3])

    def get_config(self):
        cfg = super().get_config()
        cfg.update(pool_size=list(self.pool_size), strides=list(self.strides),
                   padding=self.padding)
        return cfg

    def make_stage(self):
        return PoolStage(self)


class MaxPooling2D(_Pooling2D):
    kind = "max_pooling2d"
    is_max = True


class AveragePooling2D(_Pooling2D):
    kind = "average_pooling2d"
    is_max = False


class _GlobalPooling2D(Layer):
    is_max = False

    def __init__(self, data_format=None, keepdims=False, name=None, input_shape=None,
                 trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format must be 'channels_last' (NHWC), got {data_format!r}")
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        h, w, c = _image_shape(self, input_shape)
        return (1, 1, c) if self.keepdims else (c,)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(keepdims=self.keepdims)
        return cfg

    def make_stage(self):
        return GlobalPoolStage(self)


class GlobalAveragePooling2D(_GlobalPooling2D):
    kind = "global_average_pooling2d"
    is_max = False


class GlobalMaxPooling2D(_GlobalPooling2D):
    kind = "global_max_pooling2d"
    is_max = True


# ------------------------------------------------------------------ SpatialDropout2D
class SpatialDropout2D(Layer):
    """Drops whole feature maps: one keep decision per (sample, channel), kept maps
    scaled by 1/(1-rate); identity at inference."""
    kind = "spatial_dropout2d"

    noisy = True

    def __init__(self, rate, seed=None, data_format=None, name=None, input_shape=None,
                 trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.rate = rate_arg(rate)
        self.seed = seed_arg(seed)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format must be 'channels_last' (NHWC), got {data_format!r}")
        self.noise_index = None

    @property
    def scale(self):
        return float(np.float32(1.0 / (1.0 - self.rate)))

    def compute_output_shape(self, input_shape):
        return _image_shape(self, input_shape)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(rate=self.rate, seed=self.seed)
        return cfg

    def make_stage(self):
        return SpatialDropoutStage(self)


# ------------------------------------------------------------------ BatchNormalization
class BatchNormalization(Layer):
    """Keras 3 BatchNormalization over the last axis.  Variables in get_weights order
    [gamma, beta, moving_mean, moving_variance] (gamma / beta only with scale / center);
    TRAIN normalises with the batch mean and biased variance and updates
    moving = moving*momentum + batch*(1-momentum); INFER and MC use the moving
    statistics; a layer with trainable=False always runs in inference mode."""
    kind = "batchnorm"

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 name=None, input_shape=None, trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"axis must be an integer (the last axis), got {axis!r}")
        self.axis = int(axis)
        for nm, v in (("momentum", momentum), ("epsilon", epsilon)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"{nm} must be a finite real number, got {v!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = _initializers.get(beta_initializer)
        self.gamma_initializer = _initializers.get(gamma_initializer)
        self.moving_mean_initializer = _initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = _initializers.get(moving_variance_initializer)

    def create_variables(self, input_shape):
        s = tuple(input_shape)
        rank = len(s) + 1
        if self.axis not in (-1, rank - 1):
            raise ValueError(f"layer {self.name!r}: only the last axis (-1) is supported, got "
                             f"axis={self.axis} for inputs of per-sample shape {s}")
        if s[-1] is None:
            raise ValueError(f"layer {self.name!r}: the normalised axis must have a known "
                             f"size, got per-sample shape {s}")
        c = (s[-1],)
        if self.scale:
            self.add_weight("gamma", c, self.gamma_initializer)
        if self.center:
            self.add_weight("beta", c, self.beta_initializer)
        self.add_weight("moving_mean", c, self.moving_mean_initializer, trainable=False,
                        state=True)
        self.add_weight("moving_variance", c, self.moving_variance_initializer,
                        trainable=False, state=True)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
                   center=self.center, scale=self.scale,
                   **{k: _init_name(getattr(self, k), k) for k in (
                       "beta_initializer", "gamma_initializer", "moving_mean_initializer",
                       "moving_variance_initializer")})
        return cfg

    def make_stage(self):
        return BatchNormStage(self)


# ================================================================== stages
















# ================================================================== fusion rule








__all__ = ["Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
           "GlobalMaxPooling2D", "SpatialDropout2D", "BatchNormalization"]

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

from .. import _core
from .. import initializers as _initializers
from ..engine.plan import fusion_rule
from ..engine.stage import Stage
from .base import Layer, rate_arg, seed_arg, units_arg
from .base import initializer_config as _init_name

CONV_ACTIVATIONS = ("linear", "relu")


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
    if a is None:
        return "linear"
    if callable(a) and not isinstance(a, str):
        a = getattr(a, "__name__", a)
    if isinstance(a, str) and a.lower() in CONV_ACTIVATIONS:
        return a.lower()
    raise ValueError(f"activation must be one of {CONV_ACTIVATIONS} or None for "
                     f"convolution layers (others: add an Activation layer), got {a!r}")


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
        return (g[12], g[13], g[14])

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
        return ConvStage(self, relu=self.activation == "relu")


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
    is_max = True


class AveragePooling2D(_Pooling2D):
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
    is_max = False


class GlobalMaxPooling2D(_GlobalPooling2D):
    is_max = True


# ------------------------------------------------------------------ SpatialDropout2D
class SpatialDropout2D(Layer):
    """Drops whole feature maps: one keep decision per (sample, channel), kept maps
    scaled by 1/(1-rate); identity at inference."""

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
def _flat(a):
    return a.reshape(-1)


def _grad(layer, name):
    """layer.d<name> when the variable trains (None otherwise)."""
    if not layer.trainable:
        return None
    return getattr(layer, "d" + name, None)


class ConvStage(Stage):
    """Conv2D (+relu) (+Dropout | SpatialDropout2D) as one implicit GEMM with a fused
    epilogue.  layers: the conv, then the fused Activation / dropout layers."""

    def __init__(self, conv, relu=False, dropout=None, layers=None):
        super().__init__(layers or [conv])
        self.conv = conv
        self.relu = bool(relu)
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.spatial = isinstance(self.dropout, SpatialDropout2D)
        self.noisy = self.dropout is not None
        self._mask = self._chmask = None
        self._x = None

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.geom = self.conv.geometry(self.in_shape)
        self.out_shape = (self.geom[12], self.geom[13], self.geom[14])
        return self.out_shape

    def buffers(self, capacity):
        oh, ow, oc = self.out_shape
        b = {"out": ((capacity,) + self.out_shape, np.float32),
             "dx": ((capacity,) + self.in_shape, np.float32)}
        if self.relu or self.dropout is not None:
            b["dz"] = ((capacity,) + self.out_shape, np.float32)
        if self.dropout is not None:
            bits = capacity * (oc if self.spatial else oh * ow * oc)
            b["mask"] = (((bits + 7) // 8,), np.uint8)
        return b

    def _g(self, m):
        return (m,) + self.geom[1:]

    def forward(self, ctx, x):
        m = ctx.m
        conv = self.conv
        oh, ow, oc = self.out_shape
        y = self.buf["out"][:m]
        mask = chmask = None
        scale = 1.0
        if self.dropout is not None and ctx.noise:
            d = self.dropout
            per = oc if self.spatial else oh * ow * oc
            bits = ctx.mask(self.buf["mask"], d.rate, per, _noise_index(d), d.seed)
            scale = d.scale
            if self.spatial:
                chmask = bits
            else:
                mask = bits
        self._mask, self._chmask, self._scale = mask, chmask, scale
        bias = conv.bias if conv.use_bias else None
        _core.conv2d_forward(self._g(m), _flat(x), _flat(conv.kernel), _flat(y), bias,
                             self.relu, mask, chmask, scale)
        self._x = x
        return y

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        conv = self.conv
        oh, ow, oc = self.out_shape
        dkernel = _grad(conv, "kernel")
        dbias = _grad(conv, "bias") if conv.use_bias else None
        dy = np.ascontiguousarray(dy, np.float32).reshape(m, oh, ow, oc)
        dx = self.buf["dx"][:m] if need_dx else None
        dk = None if dkernel is None else _flat(dkernel)
        dxf = None if dx is None else _flat(dx)
        if self.relu or self._mask is not None or self._chmask is not None:
            # the epilogue's backward runs chunk by chunk inside the conv backward
            h = _flat(self.buf["out"][:m]) if self.relu else None
            _core.conv2d_backward_act(self._g(m), _flat(dy), _flat(self.buf["dz"][:m]),
                                      _flat(self._x), _flat(conv.kernel), h, self._mask,
                                      self._chmask, self._scale, self.relu, dk, dbias, dxf)
        else:
            _core.conv2d_backward(self._g(m), _flat(dy), _flat(self._x), _flat(conv.kernel),
                                  dk, dbias, dxf)
        return dx


class PoolStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.geom = self.layer.geometry(self.in_shape)
        self.out_shape = (self.geom[10], self.geom[11], self.geom[3])
        return self.out_shape

    def buffers(self, capacity):
        b = super().buffers(capacity)
        if self.layer.is_max:
            b["arg"] = ((capacity,) + self.out_shape, np.int32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        y = self.buf["out"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.pool2d_forward((m,) + self.geom[1:], self.layer.is_max, _flat(x), _flat(y), arg)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        dx = self.buf["dx"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.pool2d_backward((m,) + self.geom[1:], self.layer.is_max,
                              _flat(np.ascontiguousarray(dy, np.float32)), _flat(dx), arg)
        return dx


class GlobalPoolStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer

    def buffers(self, capacity):
        b = super().buffers(capacity)
        if self.layer.is_max:
            b["arg"] = ((capacity, self.in_shape[2]), np.int32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        h, w, c = self.in_shape
        y = self.buf["out"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.global_pool_forward(m, h * w, c, self.layer.is_max, _flat(x), _flat(y), arg)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        h, w, c = self.in_shape
        dx = self.buf["dx"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.global_pool_backward(m, h * w, c, self.layer.is_max,
                                   _flat(np.ascontiguousarray(dy, np.float32)), _flat(dx), arg)
        return dx


class SpatialDropoutStage(Stage):
    noisy = True

    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer
        self._mask = None

    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["mask"] = (((capacity * self.in_shape[-1] + 7) // 8,), np.uint8)
        return b

    def forward(self, ctx, x):
        L = self.layer
        m = ctx.m
        if not ctx.noise or L.rate == 0:
            self._mask = None
            return x
        h, w, c = self.in_shape
        self._mask = ctx.mask(self.buf["mask"], L.rate, c, _noise_index(L), L.seed)
        y = self.buf["out"][:m]
        _core.channel_mask_apply(m, h * w, c, _flat(x), self._mask, _flat(y), L.scale)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        if self._mask is None:
            return dy
        m = ctx.m
        h, w, c = self.in_shape
        dx = self.buf["dx"][:m]
        _core.channel_mask_apply(m, h * w, c, _flat(np.ascontiguousarray(dy, np.float32)),
                                 self._mask, _flat(dx), self.layer.scale)
        return dx


class BatchNormStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer
        self._train = False
        self._x = None

    def buffers(self, capacity):
        b = super().buffers(capacity)
        c = self.in_shape[-1]
        b["mean"] = ((c,), np.float32)
        b["invstd"] = ((c,), np.float32)
        return b

    def _rows(self, m):
        return m * int(np.prod(self.in_shape[:-1], dtype=np.int64))

    def forward(self, ctx, x):
        L = self.layer
        m = ctx.m
        c = self.in_shape[-1]
        rows = self._rows(m)
        y = self.buf["out"][:m]
        gamma = L.gamma if L.scale else None
        beta = L.beta if L.center else None
        self._train = ctx.training and L.trainable
        if self._train:
            _core.batchnorm_train_forward(rows, c, _flat(x), _flat(y), self.buf["mean"],
                                          self.buf["invstd"], gamma, beta, L.epsilon,
                                          L.moving_mean, L.moving_variance, L.momentum)
        else:
            self.buf["mean"][...] = L.moving_mean
            _core.batchnorm_infer_forward(rows, c, _flat(x), _flat(y), L.moving_mean,
                                          L.moving_variance, gamma, beta, L.epsilon,
                                          self.buf["invstd"])
        self._x = x
        return y

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        m = ctx.m
        c = self.in_shape[-1]
        dx = self.buf["dx"][:m] if need_dx else None
        dgamma = _grad(L, "gamma") if L.scale else None
        dbeta = _grad(L, "beta") if L.center else None
        if dx is None and dgamma is None and dbeta is None:
            return None
        _core.batchnorm_backward(self._rows(m), c, _flat(np.ascontiguousarray(dy, np.float32)),
                                 _flat(self._x), self.buf["mean"], self.buf["invstd"],
                                 L.gamma if L.scale else None,
                                 None if dx is None else _flat(dx), dgamma, dbeta,
                                 self._train)
        return dx


class ConvBNStage(Stage):
    """Conv2D (linear) + BatchNormalization [+ relu] [+ Dropout | SpatialDropout2D].
    TRAIN: conv, BN on batch statistics, relu and mask as separate passes (exact
    backward through the batch statistics).  INFER / MC: BN folded into the convolution
    (kernel * gamma/sqrt(var+eps) per output channel, bias shifted), one implicit GEMM with
    the relu / mask epilogue: the BN pass over the activations disappears."""

    def __init__(self, conv, bn, relu=False, dropout=None, layers=None):
        super().__init__(layers or [conv, bn])
        self.conv, self.bn = conv, bn
        self.cs = ConvStage(conv, relu=False)
        self.bs = BatchNormStage(bn)
        self.relu = bool(relu)
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.spatial = isinstance(self.dropout, SpatialDropout2D)
        self.noisy = self.dropout is not None
        self._wired = None
        self._mask = self._chmask = None
        self._scale = 1.0
        self._fused_out = False

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.out_shape = self.cs.bind(in_shape)
        self.bs.bind(self.out_shape)
        self.geom = self.cs.geom
        return self.out_shape

    def buffers(self, capacity):
        oh, ow, oc = self.out_shape
        b = {"cv." + k: v for k, v in self.cs.buffers(capacity).items()}
        b.update({"bn." + k: v for k, v in self.bs.buffers(capacity).items()})
        k = int(np.prod(self.conv.kernel_size)) * self.in_shape[-1]
        b["out"] = ((capacity,) + self.out_shape, np.float32)
        b["dz"] = ((capacity,) + self.out_shape, np.float32)
        b["wf"] = ((k * oc,), np.float32)
        b["bf"] = ((oc,), np.float32)
        b["a"] = ((oc,), np.float32)
        if self.dropout is not None:
            bits = capacity * (oc if self.spatial else oh * ow * oc)
            b["mask"] = (((bits + 7) // 8,), np.uint8)
        return b

    def _wire(self):
        if self._wired is not self.buf:
            self.cs.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("cv.")}
            self.bs.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("bn.")}
            self._wired = self.buf

    def _masks(self, ctx):
        mask = chmask = None
        scale = 1.0
        if self.dropout is not None and ctx.noise:
            d = self.dropout
            oh, ow, oc = self.out_shape
            per = oc if self.spatial else oh * ow * oc
            bits = ctx.mask(self.buf["mask"], d.rate, per, _noise_index(d), d.seed)
            scale = d.scale
            if self.spatial:
                chmask = bits
            else:
                mask = bits
        self._mask, self._chmask, self._scale = mask, chmask, scale
        return mask, chmask, scale

    def forward(self, ctx, x):
        self._wire()
        m = ctx.m
        oh, ow, oc = self.out_shape
        mask, chmask, scale = self._masks(ctx)
        conv, bn = self.conv, self.bn
        y = self.buf["out"][:m]
        if not ctx.training:   # fold BN (moving statistics) into the convolution
            a, bf, wf = self.buf["a"], self.buf["bf"], self.buf["wf"]
            np.add(bn.moving_variance, np.float32(bn.epsilon), out=a)
            np.sqrt(a, out=a)
            if bn.scale:
                np.divide(bn.gamma, a, out=a)
            else:
                np.divide(np.float32(1), a, out=a)
            np.multiply(conv.kernel.reshape(-1, oc), a, out=wf.reshape(-1, oc))
            if conv.use_bias:
                np.subtract(conv.bias, bn.moving_mean, out=bf)
            else:
                np.negative(bn.moving_mean, out=bf)
            bf *= a
            if bn.center:
                bf += bn.beta
            _core.conv2d_forward((m,) + self.geom[1:], _flat(x), wf, _flat(y), bf, self.relu,
                                 mask, chmask, scale)
            return y
        z = self.cs.forward(ctx, x)
        u = self.bs.forward(ctx, z)
        if not self.relu and mask is None and chmask is None:
            self._fused_out = False
            return u
        self._fused_out = True
        uf, yf = _flat(u), _flat(y)
        if self.relu:
            _core.relu(uf, yf)
            uf = yf
        if mask is not None:
            _core.dropout_apply(uf, mask, yf, scale)
        elif chmask is not None:
            _core.channel_mask_apply(m, oh * ow, oc, uf, chmask, yf, scale)
        return y

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        oh, ow, oc = self.out_shape
        dy = np.ascontiguousarray(dy, np.float32).reshape((m,) + self.out_shape)
        if self._fused_out:
            dz = self.buf["dz"][:m]
            if self.relu or self._mask is not None:
                _core.conv_act_backward(_flat(dy), _flat(dz),
                                        _flat(self.buf["out"][:m]) if self.relu else None,
                                        self._mask, self._scale, self.relu)
            else:
                _core.channel_mask_apply(m, oh * ow, oc, _flat(dy), self._chmask, _flat(dz),
                                         self._scale)
            dy = dz
        du = self.bs.backward(ctx, dy, True)
        return self.cs.backward(ctx, du, need_dx)


# ================================================================== fusion rule
def _is_relu_activation(layer):
    if type(layer).__name__ != "Activation":
        return False
    a = getattr(layer, "activation", None)
    if callable(a) and not isinstance(a, str):
        a = getattr(a, "__name__", None)
    return isinstance(a, str) and a.lower() == "relu"


def _is_plain_dropout(layer):
    return (type(layer).__name__ == "Dropout" and getattr(layer, "noise_shape", None) is None
            and isinstance(getattr(layer, "rate", None), float))


@fusion_rule
def conv_fusion_rule(layers, i):
    """Conv2D [+ Activation('relu') if linear] [+ Dropout (element-wise) | SpatialDropout2D]."""
    conv = layers[i]
    if not isinstance(conv, Conv2D):
        return None
    j = i + 1
    relu = conv.activation == "relu"
    if not relu and j < len(layers) and _is_relu_activation(layers[j]):
        relu = True
        j += 1
    drop = None
    if j < len(layers) and (_is_plain_dropout(layers[j]) or
                            isinstance(layers[j], SpatialDropout2D)):
        drop = layers[j]
        j += 1
    if j == i + 1:
        return None
    group = list(layers[i:j])
    return (lambda: ConvStage(conv, relu, drop, group)), j - i


@fusion_rule
def conv_bn_fusion_rule(layers, i):
    """Conv2D (linear) + BatchNormalization [+ Activation('relu')] [+ Dropout |
    SpatialDropout2D]: BN folded into the convolution at inference."""
    conv = layers[i]
    if not isinstance(conv, Conv2D) or conv.activation != "linear" or i + 1 >= len(layers):
        return None
    bn = layers[i + 1]
    if not isinstance(bn, BatchNormalization):
        return None
    j = i + 2
    relu = False
    if j < len(layers) and _is_relu_activation(layers[j]):
        relu = True
        j += 1
    drop = None
    if j < len(layers) and (_is_plain_dropout(layers[j]) or
                            isinstance(layers[j], SpatialDropout2D)):
        drop = layers[j]
        j += 1
    group = list(layers[i:j])
    return (lambda: ConvBNStage(conv, bn, relu, drop, group)), j - i


__all__ = ["Conv2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
           "GlobalMaxPooling2D", "SpatialDropout2D", "BatchNormalization", "ConvStage",
           "PoolStage", "GlobalPoolStage", "SpatialDropoutStage", "BatchNormStage",
           "ConvBNStage", "conv_fusion_rule", "conv_bn_fusion_rule"]

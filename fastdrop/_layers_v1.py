"""Layers of a fastdrop ``Sequential`` model (Keras names, arguments and defaults).

A layer here is configuration plus, once built, views into the model's contiguous
parameter and gradient blocks.  The model groups layers into *stages* for execution:
a ``Dense`` absorbs a following ReLU and ``Dropout`` so that one GEMM call applies bias,
ReLU and the dropout mask in its epilogue while the output tile is hot.
"""
import math
import numbers

import numpy as np

from . import _core
from . import constraints as _constraints
from . import initializers as _initializers
from . import regularizers as _regularizers
from . import random as _random

ACTIVATIONS = ("linear", "relu", "softmax", "selu")

# Backward of Dense+ReLU/Dropout as one fused pass that also sums the bias gradient
# (fd_dense_backward_act_f32).  False selects the unfused kernels (the tested reference
# path; results are bitwise identical either way).
FUSED_BACKWARD = True


def _activation(name, arg="activation"):
    if name is None:
        return "linear"
    if isinstance(name, str) and name.lower() in ACTIVATIONS:
        return name.lower()
    raise ValueError(f"{arg} must be one of {ACTIVATIONS} or None, got {name!r}")


def _units(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


class Layer:
    """Base class.  ``input_dim`` is known after ``build``; ``output_dim`` after it."""

    _counts = {}

    def __init__(self, name=None):
        if name is None:  # Keras style: dense, dense_1, dense_2, ...
            base = type(self).__name__.lower()
            k = Layer._counts.get(base, 0)
            Layer._counts[base] = k + 1
            name = base if k == 0 else f"{base}_{k}"
        self.name = name
        self.input_dim = None
        self.output_dim = None
        self.built = False

    def param_shapes(self):
        """[(name, shape)] of trainable arrays, in Keras order."""
        return []

    def build(self, input_dim):
        self.input_dim = input_dim
        self.output_dim = input_dim
        self.built = True
        return self.output_dim

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def count_params(self):
        return int(sum(int(np.prod(s)) for _, s in self.param_shapes()))

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class Dense(Layer):
    """Fully connected layer: ``y = activation(x @ kernel + bias)``, kernel (in, units).

    activation: None/'linear', 'relu', 'selu' or 'softmax' (softmax only as the last
    layer, where with a cross-entropy loss it runs as the fused softmax cross-entropy
    kernel).
    drop_connect: DropConnect rate (Wan et al., 2013): during training each weight of the
    kernel is dropped with this probability (one mask per step, shared by the batch; kept
    weights scaled by 1/(1-rate)); inference uses the full kernel.
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, kernel_constraint=None, input_dim=None,
                 input_shape=None, drop_connect=0.0, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"Dense got unexpected arguments {sorted(kwargs)}")
        super().__init__(name)
        self.units = _units(units, "units")
        self.activation = _activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        if input_shape is not None:
            shape = tuple(input_shape) if not isinstance(input_shape, numbers.Integral) \
                else (int(input_shape),)
            if len(shape) != 1:
                raise ValueError(f"input_shape must be (features,) for Dense, got {input_shape!r}"
                                 " (flatten images first, e.g. x.reshape(len(x), -1), or add "
                                 "Flatten(input_shape=...) as the first layer)")
            input_dim = shape[0]
        self.declared_input_dim = None if input_dim is None else _units(input_dim, "input_dim")
        if isinstance(drop_connect, bool) or not isinstance(drop_connect, numbers.Real) \
                or not (0.0 <= drop_connect < 1.0):
            raise ValueError(f"drop_connect must be a rate in [0, 1), got {drop_connect!r}")
        self.drop_connect = float(drop_connect)
        self.kernel = None   # views into the model's parameter block once built
        self.bias = None
        self.dkernel = None
        self.dbias = None

    def param_shapes(self):
        shapes = [("kernel", (self.input_dim, self.units))]
        if self.use_bias:
            shapes.append(("bias", (self.units,)))
        return shapes

    def build(self, input_dim):
        if self.declared_input_dim is not None and input_dim != self.declared_input_dim:
            raise ValueError(f"layer {self.name!r} declares input_dim={self.declared_input_dim}"
                             f" but receives {input_dim} features")
        self.input_dim = input_dim
        self.output_dim = self.units
        self.built = True
        return self.units

    def initial_values(self, rng):
        vals = [self.kernel_initializer((self.input_dim, self.units), rng)]
        if self.use_bias:
            vals.append(self.bias_initializer((self.units,), rng))
        return vals

    def get_config(self):
        return {
            "name": self.name, "units": self.units, "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": _initializers.name_of(self.kernel_initializer) or "glorot_uniform",
            "bias_initializer": _initializers.name_of(self.bias_initializer) or "zeros",
            "kernel_regularizer": None if self.kernel_regularizer is None
            else self.kernel_regularizer.get_config(),
            "kernel_constraint": None if self.kernel_constraint is None
            else self.kernel_constraint.get_config(),
            "input_dim": self.declared_input_dim,
            "drop_connect": self.drop_connect,
        }


class _NoiseLayer(Layer):
    """A training-time noise layer with a ``rate`` in [0, 1) and an optional ``seed``."""

    def __init__(self, rate, seed=None, name=None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not (0.0 <= rate < 1.0):
            raise ValueError(f"rate must be a float in [0, 1), got {rate!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}


class Dropout(_NoiseLayer):
    """Inverted dropout: during training each unit is zeroed with probability ``rate``
    and the kept ones scaled by ``1/(1-rate)``; identity at inference.

    seed: optional int; by default the mask stream derives from the model seed.  Either
    way the mask of each step is keyed by (seed, layer index, step): reproducible, and
    different for every layer and step.
    """

    def __init__(self, rate, noise_shape=None, seed=None, name=None):
        super().__init__(rate, seed, name)
        if noise_shape is not None:
            ns = tuple(noise_shape)
            if len(ns) != 2 or any(d is not None and (not isinstance(d, numbers.Integral) or d < 1)
                                   for d in ns):
                raise ValueError(f"noise_shape must be (batch or None, features or 1) or "
                                 f"(1, features), got {noise_shape!r}")
            noise_shape = tuple(None if d is None else int(d) for d in ns)
        self.noise_shape = noise_shape

    def build(self, input_dim):
        if self.noise_shape is not None:
            d0, d1 = self.noise_shape
            if d1 not in (None, 1, input_dim):
                raise ValueError(f"noise_shape {self.noise_shape} does not fit inputs with "
                                 f"{input_dim} features")
        return super().build(input_dim)

    @property
    def broadcast(self):
        """None (a mask per element), 'rows' (one bit per sample, shared across features)
        or 'cols' (one bit per feature, shared across the batch)."""
        if self.noise_shape is None:
            return None
        d0, d1 = self.noise_shape
        if d0 == 1 and d1 != 1:
            return "cols"
        if d1 == 1 and d0 != 1 and self.input_dim != 1:
            return "rows"
        if d0 == 1 and d1 == 1:
            return "all"
        return None

    @property
    def scale(self):
        return float(np.float32(1.0 / (1.0 - self.rate)))

    def get_config(self):
        return {**super().get_config(),
                "noise_shape": None if self.noise_shape is None else list(self.noise_shape)}


class GaussianDropout(_NoiseLayer):
    """Multiplicative Gaussian noise N(1, rate/(1-rate)) during training (Srivastava et
    al. 2014, §10); identity at inference.  The noise is counter-keyed like dropout."""

    @property
    def stddev(self):
        return math.sqrt(self.rate / (1.0 - self.rate))


class AlphaDropout(_NoiseLayer):
    """Dropout that keeps the mean and variance of SELU activations (Klambauer et al.
    2017): dropped units are set to SELU's negative saturation and an affine correction
    restores the moments.  Identity at inference.  Use with activation='selu' and
    kernel_initializer='lecun_normal'."""

    ALPHA_P = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946

    @property
    def affine(self):
        """(a, b) of the correction y = a*(x or alpha_p) + b (Keras formula)."""
        r, ap = self.rate, self.ALPHA_P
        a = ((1.0 - r) * (1.0 + r * ap * ap)) ** -0.5
        return a, -a * ap * r

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}


class Activation(Layer):
    """Applies an activation: 'relu', 'linear' or 'softmax' (softmax only last)."""

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = _activation(activation)

    def get_config(self):
        return {"name": self.name, "activation": self.activation}


class ReLU(Activation):
    """Rectified linear unit, ``max(x, 0)``."""

    def __init__(self, name=None):
        super().__init__("relu", name)

    def get_config(self):
        return {"name": self.name}


class Flatten(Layer):
    """Flattens each sample to a vector (only as the first layer: inputs are reshaped
    once, without a copy, before the first Dense)."""

    def __init__(self, input_shape=None, name=None):
        super().__init__(name)
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)

    def get_config(self):
        return {"name": self.name, "input_shape": self.input_shape}


class InputLayer(Layer):
    """Declares the input feature count (``keras.Input(shape=(features,))`` equivalent)."""

    def __init__(self, shape=None, input_shape=None, name=None):
        super().__init__(name)
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("shape is required, e.g. InputLayer(shape=(784,))")
        self.shape = tuple(int(d) for d in (shape if not isinstance(shape, numbers.Integral)
                                            else (shape,)))

    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}


def Input(shape, name=None):
    """``Input(shape=(784,))`` as the first element of ``Sequential([...])``."""
    return InputLayer(shape=shape, name=name)


LAYER_TYPES = {c.__name__: c for c in (Dense, Dropout, GaussianDropout, AlphaDropout, Activation,
                                        ReLU, Flatten, InputLayer)}


# --------------------------------------------------------------------- stages
class _Stage:
    """Executable part of a model.  Buffers are views of at most ``capacity`` rows."""

    def allocate(self, capacity):
        pass

    def forward(self, x, m, training, step):
        raise NotImplementedError

    def backward(self, dy, m, need_dx):
        raise NotImplementedError


def _dropout_seed(model_seed, layer, index, step, key=_random.KEY_DROPOUT):
    base = layer.seed if layer.seed is not None else model_seed
    return _random.derive(base, key, index, step)


class DenseStage(_Stage):
    """Dense (+ ReLU) (+ Dropout) as one GEMM with a fused epilogue; SELU is applied
    after the GEMM (then a following dropout is its own stage).  DropConnect masks the
    kernel once per step."""

    def __init__(self, dense, act, dropout, dropout_index, model):
        self.dense = dense
        self.act = act                    # 'linear' | 'relu' | 'selu'
        self.relu = act == "relu"
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.dropout_index = dropout_index
        self.model = model
        self.units = dense.units
        self.out = self.dz = self.dx = self.mask = None
        self._mask = None
        self._wmask = None

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.units), np.float32)
        self.dz = np.empty((capacity, self.units), np.float32)
        self.dx = np.empty((capacity, self.dense.input_dim), np.float32)
        if self.dropout is not None:
            self.mask = np.empty((capacity * self.units + 7) // 8, np.uint8)
        if self.dense.drop_connect > 0 and getattr(self, "wm", None) is None:
            self.wm = np.empty((self.dense.input_dim, self.units), np.float32)
            self.wmask = np.empty((self.wm.size + 7) // 8, np.uint8)

    def _kernel(self, training, step, seed):
        d = self.dense
        self._wmask = None
        if not training or d.drop_connect == 0:
            return d.kernel
        wseed = _random.derive(self.model.seed if seed is None else seed,
                               _random.KEY_DROPCONNECT, self.model.layers.index(d), step)
        w = self.wm.reshape(-1)
        _core.dropout_forward(d.kernel.reshape(-1), w, wseed, d.drop_connect, self.wmask)
        self._wmask = self.wmask
        return self.wm

    def forward(self, x, m, training, step, seed=None):
        d = self.dense
        h = self.out[:m]
        if not training:  # inference: one GEMM with bias/ReLU epilogue (latency path)
            _core.gemm(x, d.kernel, h, False, False, 1.0, 0.0, d.bias, self.relu)
            if self.act == "selu":
                _core.selu(h.reshape(-1), h.reshape(-1))
            self._x = x
            self._mask = self._wmask = None
            return h
        mask = None
        if self.dropout is not None:
            nb = (m * self.units + 7) // 8
            mask = self.mask[:nb]
            dseed = seed if seed is not None else \
                _dropout_seed(self.model.seed, self.dropout, self.dropout_index, step)
            _core.dropout_mask(m * self.units, dseed, self.dropout.rate, mask)
        self._x = x
        self._mask = mask
        w = self._kernel(training, step, seed)
        _core.gemm(x, w, h, False, False, 1.0, 0.0, d.bias, self.relu, mask,
                   self.dropout.scale if mask is not None else 1.0)
        if self.act == "selu":
            _core.selu(h.reshape(-1), h.reshape(-1))
        return h

    def backward(self, dh, m, need_dx):
        d = self.dense
        h = self.out[:m]
        mask = self._mask
        dz = self.dz[:m]
        bias_done = False
        scale = self.dropout.scale if mask is not None else 1.0
        if FUSED_BACKWARD and (self.relu or mask is not None):
            # one pass: ReLU sign / dropout mask, and the bias gradient (column sums)
            _core.dense_backward_act(dh, h, None if self.relu else mask, scale, self.relu, dz,
                                     d.dbias if d.use_bias else None)
            bias_done = True
        elif self.relu and mask is not None:
            _core.relu_dropout_backward(dh.reshape(-1), h.reshape(-1), dz.reshape(-1), scale)
        elif self.relu:
            _core.relu_backward(dh.reshape(-1), h.reshape(-1), dz.reshape(-1))
        elif mask is not None:
            _core.dropout_apply(dh.reshape(-1), mask, dz.reshape(-1), scale)
        elif self.act == "selu":
            _core.selu_backward(dh.reshape(-1), h.reshape(-1), dz.reshape(-1))
        else:
            dz = dh
        _core.gemm(self._x, dz, d.dkernel, True, False, 1.0, 0.0)
        w = d.kernel
        if self._wmask is not None:
            flat = d.dkernel.reshape(-1)
            _core.dropout_apply(flat, self._wmask, flat,
                                float(np.float32(1.0 / (1.0 - d.drop_connect))))
            w = self.wm
        if d.use_bias and not bias_done:
            _core.colsum(dz, d.dbias)
        if d.kernel_regularizer is not None:
            r = d.kernel_regularizer
            _core.regularize_grad(d.dkernel.reshape(-1), d.kernel.reshape(-1), r.l1, r.l2)
        if not need_dx:
            return None
        dx = self.dx[:m]
        _core.gemm(dz, w, dx, False, True, 1.0, 0.0)
        return dx


class _NoiseStage(_Stage):
    """A training-time noise layer as its own stage (not fused into a Dense): identity at
    inference; in training ``_noise_forward`` draws this step's noise (keyed by the seed,
    the layer index and the step) and ``_noise_backward`` applies the same noise to the
    gradient."""

    def __init__(self, layer, index, model):
        self.layer = layer
        self.index = index
        self.model = model
        self.dim = layer.input_dim

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.dim), np.float32)
        self.dx = np.empty((capacity, self.dim), np.float32)

    def forward(self, x, m, training, step, seed=None):
        self._active = training and self.layer.rate > 0
        if not self._active:
            return x
        if seed is None:
            seed = _dropout_seed(self.model.seed, self.layer, self.index, step)
        y = self.out[:m]
        self._noise_forward(x.reshape(-1), y.reshape(-1), m, seed)
        return y

    def backward(self, dy, m, need_dx):
        if not need_dx:
            return None
        if not self._active:
            return dy
        dx = self.dx[:m]
        self._noise_backward(dy.reshape(-1), dx.reshape(-1), m)
        return dx


class DropoutStage(_NoiseStage):
    """A Dropout not fused into a Dense (e.g. on the inputs, or with a noise_shape)."""

    def allocate(self, capacity):
        super().allocate(capacity)
        self.mask = np.empty((capacity * self.dim + 7) // 8, np.uint8)

    def _make_mask(self, m, seed):
        nb = (m * self.dim + 7) // 8
        mask = self.mask[:nb]
        mode = self.layer.broadcast
        if mode is None:
            _core.dropout_mask(m * self.dim, seed, self.layer.rate, mask)
            return mask
        small_n = {"rows": m, "cols": self.dim, "all": 1}[mode]
        small = np.empty((small_n + 7) // 8, np.uint8)
        _core.dropout_mask(small_n, seed, self.layer.rate, small)
        keep = np.unpackbits(small, count=small_n, bitorder="little").astype(bool)
        full = {"rows": lambda: np.repeat(keep, self.dim),
                "cols": lambda: np.tile(keep, m),
                "all": lambda: np.repeat(keep, m * self.dim)}[mode]()
        mask[...] = np.packbits(full, bitorder="little")
        return mask

    def _noise_forward(self, x, y, m, seed):
        self._mask = self._make_mask(m, seed)
        _core.dropout_apply(x, self._mask, y, self.layer.scale)

    def _noise_backward(self, dy, dx, m):
        _core.dropout_apply(dy, self._mask, dx, self.layer.scale)


class GaussianDropoutStage(_NoiseStage):
    def allocate(self, capacity):
        super().allocate(capacity)
        self.noise = np.empty(capacity * self.dim, np.float32)

    def _noise_forward(self, x, y, m, seed):
        noise = self.noise[:m * self.dim]
        _core.gaussian_noise(noise, seed, self.layer.stddev)
        _core.mul(x, noise, y)

    def _noise_backward(self, dy, dx, m):
        _core.mul(dy, self.noise[:m * self.dim], dx)


class AlphaDropoutStage(DropoutStage):
    def _noise_forward(self, x, y, m, seed):
        self._mask = self.mask[:(m * self.dim + 7) // 8]
        _core.dropout_mask(m * self.dim, seed, self.layer.rate, self._mask)
        a, b = self.layer.affine
        _core.alpha_dropout_apply(x, self._mask, y, a, b, self.layer.ALPHA_P)

    def _noise_backward(self, dy, dx, m):
        _core.dropout_apply(dy, self._mask, dx, self.layer.affine[0])


class ActivationStage(_Stage):
    def __init__(self, dim, act):
        self.dim = dim
        self.act = act

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.dim), np.float32)
        self.dx = np.empty((capacity, self.dim), np.float32)

    def forward(self, x, m, training, step, seed=None):
        y = self.out[:m]
        (_core.relu if self.act == "relu" else _core.selu)(x.reshape(-1), y.reshape(-1))
        return y

    def backward(self, dy, m, need_dx):
        if not need_dx:
            return None
        dx = self.dx[:m]
        (_core.relu_backward if self.act == "relu" else _core.selu_backward)(
            dy.reshape(-1), self.out[:m].reshape(-1), dx.reshape(-1))
        return dx

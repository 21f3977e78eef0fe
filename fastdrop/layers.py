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

ACTIVATIONS = ("linear", "relu", "softmax")


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

    activation: None/'linear', 'relu' or 'softmax' (softmax only as the last layer,
    where with a cross-entropy loss it runs as the fused softmax cross-entropy kernel).
    """

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, kernel_constraint=None, input_dim=None,
                 input_shape=None, name=None, **kwargs):
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
        }


class Dropout(Layer):
    """Inverted dropout: during training each unit is zeroed with probability ``rate``
    and the kept ones scaled by ``1/(1-rate)``; identity at inference.

    seed: optional int; by default the mask stream derives from the model seed.  Either
    way the mask of each step is keyed by (seed, layer index, step): reproducible, and
    different for every layer and step.
    """

    def __init__(self, rate, noise_shape=None, seed=None, name=None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (0.0 <= rate < 1.0) \
                or math.isnan(rate):
            raise ValueError(f"rate must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        if noise_shape is not None:
            raise ValueError("noise_shape is not supported yet; use noise_shape=None")
        self.noise_shape = None

    @property
    def scale(self):
        return float(np.float32(1.0 / (1.0 - self.rate)))

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


LAYER_TYPES = {c.__name__: c for c in (Dense, Dropout, Activation, ReLU, Flatten, InputLayer)}


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
    """Dense (+ ReLU) (+ Dropout) as one GEMM with a fused epilogue."""

    def __init__(self, dense, relu, dropout, dropout_index, model):
        self.dense = dense
        self.relu = relu
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.dropout_index = dropout_index
        self.model = model
        self.units = dense.units
        self.out = self.dz = self.dx = self.mask = None

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.units), np.float32)
        self.dz = np.empty((capacity, self.units), np.float32)
        self.dx = np.empty((capacity, self.dense.input_dim), np.float32)
        if self.dropout is not None:
            self.mask = np.empty((capacity * self.units + 7) // 8, np.uint8)

    def forward(self, x, m, training, step, seed=None):
        d = self.dense
        h = self.out[:m]
        mask = None
        if self.dropout is not None and training:
            nb = (m * self.units + 7) // 8
            mask = self.mask[:nb]
            if seed is None:
                seed = _dropout_seed(self.model.seed, self.dropout, self.dropout_index, step)
            _core.dropout_mask(m * self.units, seed, self.dropout.rate, mask)
        self._x = x
        self._mask = mask
        _core.gemm(x, d.kernel, h, False, False, 1.0, 0.0, d.bias, self.relu, mask,
                   self.dropout.scale if mask is not None else 1.0)
        return h

    def backward(self, dh, m, need_dx):
        d = self.dense
        h = self.out[:m]
        mask = self._mask
        if self.relu or mask is not None:
            dz = self.dz[:m]
            if self.relu and mask is not None:
                _core.relu_dropout_backward(dh.reshape(-1), h.reshape(-1), dz.reshape(-1),
                                            self.dropout.scale)
            elif self.relu:
                _core.relu_backward(dh.reshape(-1), h.reshape(-1), dz.reshape(-1))
            else:
                _core.dropout_apply(dh.reshape(-1), mask, dz.reshape(-1), self.dropout.scale)
        else:
            dz = dh
        _core.gemm(self._x, dz, d.dkernel, True, False, 1.0, 0.0)
        if d.use_bias:
            _core.colsum(dz, d.dbias)
        if d.kernel_regularizer is not None:
            r = d.kernel_regularizer
            _core.regularize_grad(d.dkernel.reshape(-1), d.kernel.reshape(-1), r.l1, r.l2)
        if not need_dx:
            return None
        dx = self.dx[:m]
        _core.gemm(dz, d.kernel, dx, False, True, 1.0, 0.0)
        return dx


class DropoutStage(_Stage):
    """A Dropout not fused into a Dense (e.g. on the inputs)."""

    def __init__(self, layer, index, model):
        self.layer = layer
        self.index = index
        self.model = model
        self.dim = layer.input_dim

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.dim), np.float32)
        self.dx = np.empty((capacity, self.dim), np.float32)
        self.mask = np.empty((capacity * self.dim + 7) // 8, np.uint8)

    def forward(self, x, m, training, step, seed=None):
        self._active = training and self.layer.rate > 0
        if not self._active:
            return x
        y = self.out[:m]
        nb = (m * self.dim + 7) // 8
        if seed is None:
            seed = _dropout_seed(self.model.seed, self.layer, self.index, step)
        _core.dropout_forward(x.reshape(-1), y.reshape(-1), seed, self.layer.rate,
                              self.mask[:nb])
        return y

    def backward(self, dy, m, need_dx):
        if not need_dx:
            return None
        if not self._active:
            return dy
        dx = self.dx[:m]
        nb = (m * self.dim + 7) // 8
        _core.dropout_apply(dy.reshape(-1), self.mask[:nb], dx.reshape(-1), self.layer.scale)
        return dx


class ReluStage(_Stage):
    def __init__(self, dim):
        self.dim = dim

    def allocate(self, capacity):
        self.out = np.empty((capacity, self.dim), np.float32)
        self.dx = np.empty((capacity, self.dim), np.float32)

    def forward(self, x, m, training, step, seed=None):
        y = self.out[:m]
        _core.relu(x.reshape(-1), y.reshape(-1))
        return y

    def backward(self, dy, m, need_dx):
        if not need_dx:
            return None
        dx = self.dx[:m]
        _core.relu_backward(dy.reshape(-1), self.out[:m].reshape(-1), dx.reshape(-1))
        return dx

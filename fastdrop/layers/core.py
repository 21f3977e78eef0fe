"""Core layers: Dense, Activation, ReLU, Flatten, Reshape, InputLayer/Input."""
import numbers

import numpy as np

from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine import activations as _acts
from .base import Layer, initializer_config, rate_arg, shape_arg, units_arg


def activation_arg(name, arg="activation"):
    """The canonical name of an activation given by name (Keras's names and aliases) or as
    a function with that name (``keras.activations.gelu``); None is 'linear'."""
    n = _acts.canonical(name)
    if n is None:
        raise ValueError(f"{arg} must be one of {_acts.names()} or None, got {name!r}")
    if n == "threshold":
        raise ValueError(f"{arg} 'threshold' needs its threshold and default_value: use "
                         "Activation('threshold', threshold=..., default_value=...)")
    return n


def _glu_units(name, units, arg):
    if name == "glu" and units % 2:
        raise ValueError(f"activation 'glu' splits the last axis in two halves: {arg} must "
                         f"be even, got {units}")


class Dense(Layer):
    """Fully connected layer: ``y = activation(x @ kernel + bias)``, kernel (in, units).

    On inputs of more than one axis it acts on the last one, as Keras.
    activation: any of ``keras.activations`` by name (``fastdrop.engine.activations``),
    on the last axis: 'relu' is fused into the GEMM epilogue, the others run on the GEMM's
    output tile buffer right after it; a final 'softmax'/'sigmoid' is fused with its
    cross-entropy loss; 'glu' halves the last axis (units/2 outputs, as Keras computes).
    drop_connect: DropConnect rate (Wan et al., 2013): during training each weight of the
    kernel is dropped with this probability (one mask per step, shared by the batch; kept
    weights scaled by 1/(1-rate)); inference uses the full kernel.
    """
    kind = "dense"

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, drop_connect=0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units_arg(units, "units")
        self.activation = activation_arg(activation)
        _glu_units(self.activation, self.units, "units")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self.drop_connect = rate_arg(drop_connect, "drop_connect")

    @property
    def noisy(self):
        return self.drop_connect > 0

    # v1 attribute names, kept for users and old code
    @property
    def input_dim(self):
        return None if self.input_shape is None else self.input_shape[-1]

    @property
    def declared_input_dim(self):
        d = self.declared_input_shape
        return None if d is None else d[-1]

    def create_variables(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"layer {self.name!r}: the last input axis must be known, got "
                             f"input shape {input_shape}")
        self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer,
                        regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer,
                            regularizer=self.bias_regularizer, constraint=self.bias_constraint)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (
            self.units // 2 if self.activation == "glu" else self.units,)

    def make_stage(self):
        from ..engine.stages.core import DenseStage
        return DenseStage(self, self.activation, None)

    def get_config(self):
        cfg = super().get_config()
        cfg.update({
            "units": self.units, "activation": self.activation, "use_bias": self.use_bias,
            "kernel_initializer": initializer_config(self.kernel_initializer, "kernel_initializer"),
            "bias_initializer": initializer_config(self.bias_initializer, "bias_initializer"),
            "kernel_regularizer": _regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": _regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": _constraints.serialize(self.kernel_constraint),
            "bias_constraint": _constraints.serialize(self.bias_constraint),
            "drop_connect": self.drop_connect,
        })
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "input_dim" in config:   # v1 files
            d = config.pop("input_dim")
            if d is not None and "input_shape" not in config:
                config["input_shape"] = (d,)
        return cls(**config)


class Activation(Layer):
    """Applies an activation function by name (Keras names, ``keras.activations``) on the
    last axis, for inputs of any rank.  The keyword arguments of the Keras function go
    with it: ``Activation('relu', max_value=6.0)``, ``Activation('gelu',
    approximate=True)``, ``Activation('threshold', threshold=0.5, default_value=0.0)``,
    ``Activation('celu', alpha=0.5)`` (``activation_params`` holds them)."""
    kind = "activation"
    _PASS = ("name", "input_shape", "trainable", "dtype")

    def __init__(self, activation, activation_params=None, **kwargs):
        name = _acts.canonical(activation)
        if name is None:
            raise ValueError(f"activation must be one of {_acts.names()} or None, got "
                             f"{activation!r}")
        params = dict(activation_params or {})
        for k in list(kwargs):
            if k in _acts.KERAS_PARAMS.get(name, {}) and k not in self._PASS:
                params[k] = kwargs.pop(k)
        super().__init__(**kwargs)
        if name == "gelu_tanh":
            name, params = "gelu", {**params, "approximate": True}
        self.activation = name
        self.activation_params = _acts.check_params(name, params, f"layer {self.name!r}:")

    def compute_output_shape(self, input_shape):
        if self.activation == "glu":
            c = input_shape[-1]
            if c is not None and c % 2:
                raise ValueError(f"layer {self.name!r}: glu splits the last axis in two "
                                 f"halves; it must be even, got input shape {input_shape}")
            return tuple(input_shape[:-1]) + (None if c is None else c // 2,)
        return tuple(input_shape)

    def make_stage(self):
        from ..engine.stages.core import ActivationStage
        return ActivationStage(self, self.activation, self.activation_params)

    def get_config(self):
        cfg = {**super().get_config(), "activation": self.activation}
        cfg.update(self.activation_params)
        return cfg


class ReLU(Activation):
    """Rectified linear unit as Keras's ``ReLU`` layer: ``max(x, 0)`` by default, with
    ``max_value`` (a cap), ``negative_slope`` (below ``threshold``) and ``threshold``:
    ``x >= max_value: max_value; x > threshold: x; else negative_slope (x - threshold)``."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        kwargs.pop("activation", None)
        super().__init__("relu", activation_params={
            "max_value": max_value, "negative_slope": negative_slope,
            "threshold": threshold}, **kwargs)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activation")
        return cfg


class LeakyReLU(Activation):
    """Keras's ``LeakyReLU`` layer: ``x > 0 ? x : negative_slope * x`` (default 0.3)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        kwargs.pop("activation", None)
        super().__init__("leaky_relu", activation_params={"negative_slope": negative_slope},
                         **kwargs)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activation")
        return cfg


class ELU(Activation):
    """Keras's ``ELU`` layer: ``x > 0 ? x : alpha (exp(x) - 1)``."""

    def __init__(self, alpha=1.0, **kwargs):
        kwargs.pop("activation", None)
        super().__init__("elu", activation_params={"alpha": alpha}, **kwargs)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activation")
        return cfg


class Softmax(Activation):
    """Keras's ``Softmax`` layer on the last axis (``axis=-1``)."""

    def __init__(self, axis=-1, **kwargs):
        kwargs.pop("activation", None)
        super().__init__("softmax", activation_params={"axis": axis}, **kwargs)

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("activation")
        return cfg


class Flatten(Layer):
    """Flattens each sample to a vector, in row-major (H, W, C) order as Keras."""
    kind = "flatten"

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"Flatten needs a fully known input shape, got {input_shape} "
                             "(a free time axis cannot be flattened)")
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def make_stage(self):
        from ..engine.stage import IdentityStage
        return IdentityStage([self])


class Reshape(Layer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1)."""
    kind = "reshape"

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        ts = tuple(target_shape)
        if sum(1 for d in ts if d == -1) > 1 or any(
                isinstance(d, bool) or not isinstance(d, numbers.Integral) or (d <= 0 and d != -1)
                for d in ts):
            raise ValueError(f"target_shape must be positive integers with at most one -1, "
                             f"got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in ts)

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"Reshape needs a fully known input shape, got {input_shape}")
        n = int(np.prod(input_shape, dtype=np.int64))
        ts = list(self.target_shape)
        if -1 in ts:
            known = int(np.prod([d for d in ts if d != -1], dtype=np.int64))
            if known == 0 or n % known:
                raise ValueError(f"cannot reshape {input_shape} to {self.target_shape}")
            ts[ts.index(-1)] = n // known
        if int(np.prod(ts, dtype=np.int64)) != n:
            raise ValueError(f"cannot reshape inputs of shape {input_shape} ({n} values) to "
                             f"{self.target_shape}")
        return tuple(ts)

    def make_stage(self):
        from ..engine.stage import IdentityStage
        return IdentityStage([self])

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


#: Keras 3's dtypes (keras.src.backend.common.dtypes.ALLOWED_DTYPES) fastdrop takes as
#: inputs: floats are converted to float32 (the engine computes in float32), integers and
#: bool are first cast to that dtype as Keras converts inputs, then to float32
FLOAT_INPUT_DTYPES = ("float16", "float32", "float64", "bfloat16")
INT_INPUT_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                    "bool")
_NON_NUMERIC_DTYPES = ("string", "float8_e4m3fn", "float8_e5m2", "complex64", "complex128")


def input_dtype_arg(dtype, name="dtype"):
    """A Keras dtype name as ``keras.backend.standardize_dtype`` reads it (None ->
    'float32'; Python int/float/bool, NumPy and torch dtypes by their names)."""
    if dtype is None:
        return "float32"
    d = dtype
    if d is bool:
        d = "bool"
    elif d is int or (isinstance(d, str) and d == "int"):
        d = "int32"
    elif d is float:
        d = "float32"
    elif not isinstance(d, str):
        if "torch" in str(d):
            d = str(d).split(".")[-1]
        elif hasattr(d, "name") and isinstance(getattr(d, "name"), str):
            d = d.name
        elif hasattr(d, "__name__"):
            d = d.__name__
    if d == "bool_":
        d = "bool"
    if isinstance(d, str) and d in FLOAT_INPUT_DTYPES + INT_INPUT_DTYPES:
        return d
    if isinstance(d, str) and d in _NON_NUMERIC_DTYPES:
        raise ValueError(f"{name}={d!r} is not supported: fastdrop inputs are numbers (one of "
                         f"{list(FLOAT_INPUT_DTYPES + INT_INPUT_DTYPES)})")
    raise ValueError(f"{name} must be one of Keras's dtypes "
                     f"{list(FLOAT_INPUT_DTYPES + INT_INPUT_DTYPES)}, got {dtype!r}")


class InputLayer(Layer):
    """Declares the per-sample input shape (``keras.Input(shape=...)``) and the input
    dtype: a float dtype (default 'float32'), or an integer/bool one for token ids
    (``Input((T,), dtype='int32')`` before an ``Embedding``).  Inputs are cast to it as
    Keras converts them (floats to an int dtype truncate), then computed in float32."""
    kind = "input"

    def __init__(self, shape=None, input_shape=None, name=None, dtype=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("shape is required, e.g. Input(shape=(784,))")
        self._input_dtype = input_dtype_arg(dtype)
        super().__init__(name=name, input_shape=shape_arg(shape, "shape"), **kwargs)
        self.shape = self.declared_input_shape

    @property
    def dtype(self):
        """The input dtype (as Keras's ``InputLayer.dtype``; the layer has no variables)."""
        return self._input_dtype

    @property
    def cast_dtype(self):
        """The NumPy dtype inputs are cast to before float32 (None for float inputs)."""
        return None if self.dtype in FLOAT_INPUT_DTYPES else np.dtype(self.dtype)

    def make_stage(self):
        from ..engine.stage import IdentityStage
        return IdentityStage([self])

    def get_config(self):
        cfg = super().get_config()
        cfg.pop("input_shape", None)
        cfg["shape"] = [d for d in self.shape]
        cfg["dtype"] = self.dtype
        return cfg


def Input(shape, name=None, dtype=None):
    """``Input(shape=(784,))`` as the first element of ``Sequential([...])``;
    ``Input(shape=(T,), dtype='int32')`` for token ids (Keras's dtypes, see
    ``InputLayer``)."""
    return InputLayer(shape=shape, name=name, dtype=dtype)

"""The layer contract: configuration + shape inference + declared variables.

A layer never runs computations itself: ``make_stage()`` returns the stage that does
(``fastdrop.engine.stage``).  Shapes are *per sample*: ``(784,)``, ``(28, 28, 1)``
(NHWC), ``(None, 28)`` (a sequence of any length).
"""
import numbers

import numpy as np

from .. import constraints as _constraints
from .. import mixed_precision as _mixed_precision
from .. import initializers as _initializers
from .. import regularizers as _regularizers


def units_arg(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def rate_arg(v, name="rate"):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be a float in [0, 1), got {v!r}")
    return float(v)


def seed_arg(seed, name="seed"):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def shape_arg(shape, name="input_shape"):
    """A per-sample shape tuple; ints > 0 or None (a free time axis)."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of positive integers, got {shape!r}") \
            from None
    out = []
    for d in shape:
        if d is None:
            out.append(None)
        elif isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0:
            raise ValueError(f"{name} must be a tuple of positive integers (or None), "
                             f"got {shape!r}")
        else:
            out.append(int(d))
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


def initializer_config(init, arg):
    """The config entry of an initializer: its name.  A callable without a name cannot be
    saved, so it is refused with a clear error (never replaced by a default)."""
    name = _initializers.name_of(init)
    if name is None:
        raise ValueError(f"{arg} is a callable and cannot be saved in a config; use a named "
                         f"initializer (one of {sorted(_initializers.names())})")
    return name


class Variable:
    """A declared variable.  ``value`` (and ``grad`` when trainable) are views into the
    model's blocks once the model allocates them."""

    __slots__ = ("name", "shape", "initializer", "trainable", "state", "regularizer",
                 "constraint", "value", "grad", "layer")

    def __init__(self, layer, name, shape, initializer, trainable=True, state=False,
                 regularizer=None, constraint=None):
        self.layer = layer
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.initializer = initializer
        self.trainable = bool(trainable) and not state
        self.state = bool(state)
        self.regularizer = regularizer
        self.constraint = constraint
        self.value = None
        self.grad = None

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        kind = "state" if self.state else ("trainable" if self.trainable else "frozen")
        return f"<Variable {self.layer.name}/{self.name} {self.shape} {kind}>"


class Layer:
    """Base class of every layer.

    Subclasses implement ``create_variables(input_shape)`` (calls ``add_weight``),
    ``compute_output_shape(input_shape)``, ``get_config()`` and ``make_stage()``;
    ``noisy = True`` for layers that draw noise.  Every layer takes ``input_shape`` (and
    ``name``, ``trainable``) as in Keras.
    """

    noisy = False
    #: what the engine's fusion rules match on (the engine never imports layer classes)
    kind = None
    _counts = {}

    def __init__(self, name=None, input_shape=None, input_dim=None, trainable=True,
                 dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        if name is None:  # Keras style: dense, dense_1, dense_2, ...
            base = _snake(type(self).__name__)
            k = Layer._counts.get(base, 0)
            Layer._counts[base] = k + 1
            name = base if k == 0 else f"{base}_{k}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError("give input_shape or input_dim, not both")
            input_shape = (units_arg(input_dim, "input_dim"),)
        self.declared_input_shape = None if input_shape is None else shape_arg(input_shape)
        self.trainable = bool(trainable)
        # the dtype policy (Keras): None takes the global one, at construction time
        self._dtype_policy = _mixed_precision.get(dtype)
        self.input_shape = None
        self.output_shape = None
        self.variables = []
        self.built = False

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        """Build for a per-sample ``input_shape``; returns the per-sample output shape."""
        input_shape = tuple(input_shape)
        d = self.declared_input_shape
        if d is not None and (len(d) != len(input_shape) or any(
                a is not None and b is not None and a != b for a, b in zip(d, input_shape))):
            raise ValueError(f"layer {self.name!r} declares input_shape={d} but receives "
                             f"inputs of shape {input_shape}")
        self.variables = []
        self.input_shape = input_shape
        self.create_variables(input_shape)
        self.output_shape = tuple(self.compute_output_shape(input_shape))
        self.built = True
        return self.output_shape

    def create_variables(self, input_shape):
        """Declare variables with ``add_weight`` (default: none)."""

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def add_weight(self, name, shape, initializer="zeros", trainable=True, state=False,
                   regularizer=None, constraint=None):
        """Declare a variable; it becomes ``self.<name>`` (and ``self.d<name>``, its
        gradient, when trainable) once the model allocates its blocks."""
        v = Variable(self, name, shape, _initializers.get(initializer), trainable, state,
                     _regularizers.get(regularizer), _constraints.get(constraint))
        self.variables.append(v)
        return v

    def make_stage(self):
        raise NotImplementedError(f"{type(self).__name__} has no stage")

    # ---------------------------------------------------------------- weights
    def count_params(self):
        return int(sum(v.size for v in self.variables))

    def get_weights(self):
        return [np.array(v.value) for v in self.variables]

    def set_weights(self, weights):
        weights = list(weights)
        if len(weights) != len(self.variables):
            raise ValueError(f"layer {self.name!r} has {len(self.variables)} weights, got "
                             f"{len(weights)} arrays")
        arrs = []
        for v, w in zip(self.variables, weights):
            w = np.asarray(w)
            if w.shape != v.shape:
                raise ValueError(f"weight {v.name!r} of layer {self.name!r} must have shape "
                                 f"{v.shape}, got {w.shape}")
            if w.dtype.kind not in "iuf" or not np.isfinite(w).all():
                raise ValueError(f"weight {v.name!r} of layer {self.name!r} must be finite "
                                 "real numbers")
            arrs.append(w)
        for v, w in zip(self.variables, arrs):
            v.value[...] = w

    # ---------------------------------------------------------------- dtype policy
    @property
    def dtype_policy(self):
        """The layer's DTypePolicy (``fastdrop.mixed_precision``)."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value):
        self._dtype_policy = _mixed_precision.get(value)

    @property
    def compute_dtype(self):
        """'float32', or 'bfloat16' under 'mixed_bfloat16'."""
        return self._dtype_policy.compute_dtype

    @property
    def variable_dtype(self):
        """Always 'float32' (master weights)."""
        return self._dtype_policy.variable_dtype

    @property
    def dtype(self):
        """The variables' dtype, as Keras's ``layer.dtype``."""
        return self._dtype_policy.variable_dtype

    # ---------------------------------------------------------------- config
    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable,
               "dtype": self._dtype_policy.name}
        if self.declared_input_shape is not None:
            cfg["input_shape"] = list(self.declared_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


def _snake(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0 and (not name[i - 1].isupper() or
                                       (i + 1 < len(name) and name[i + 1].islower())):
            if not name[i - 1].isdigit():
                out.append("_")
        out.append(ch.lower())
    return "".join(out)

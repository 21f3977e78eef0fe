"""Recurrent layers (Keras 3 names, arguments, defaults and weight layouts) and their
stages: Embedding, SimpleRNN, LSTM, GRU, Bidirectional, GlobalAveragePooling1D,
GlobalMaxPooling1D.

The time loop runs in C (``csrc/nn/rnn.c``, see ``csrc/nn/rnn.h``): per step and gate one
GEMM micro-kernel pass over [x_t | 1 | h_{t-1}] times the packed [W; b; U] (the input
projection fused into the recurrent product), then one fused gate kernel; backward through
time in C with the gate values cached in the stage workspace, the weight gradients
accumulated per step in a fixed order.  Python never loops over steps.

Variational dropout as Keras 3 (keras/src/layers/rnn/{lstm,gru,simple_rnn}.py and
dropout_rnn_cell.py, read 2026-12): masks are drawn once per sequence per call and
reused at every step; ``dropout`` masks x_t, ``recurrent_dropout`` masks h_{t-1}, the
LSTM cell state is never dropped.  Keras 3 sets ``implementation = 1`` whenever
``recurrent_dropout > 0``, and then draws ``dropout_mask_count`` (LSTM 4, GRU 3)
independent masks per gate for the inputs *and* for h_{t-1}; with
``recurrent_dropout == 0`` a single input mask is shared by all gates.  fastdrop does the
same: input masks are ``ctx.mask`` parts 1..G (or part 1 alone), recurrent masks parts
11..10+G, keyed per sample (a sample's masks do not depend on its batch).

A sequence mask (``ctx.seq_mask`` (m, T) bool, set by the engine from the previous
stage's ``mask_out``, e.g. ``Embedding(mask_zero=True)``) skips steps: the state carries
over and the output at a masked step is the previous output (Keras semantics).
"""
import numbers

import numpy as np

from .. import _core
from .. import constraints as _constraints
from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..engine.stages.recurrent import (BidirectionalStage, EmbeddingStage,  # noqa: F401
                                        GlobalAveragePooling1DStage,
                                        GlobalMaxPooling1DStage, RNNStage,
                                        validate_token_ids)
from .base import Layer, rate_arg, seed_arg, units_arg
from .base import initializer_config as _init_name

#: activations the recurrent cells run (their backward reads the activation's output)
_ACTS = tuple(k for k in _core.RNN_ACTS if k is not None)
#: SimpleRNN keeps its pre-activations: also the activations whose derivative needs them
_ACTS_SIMPLE = tuple(k for k in _core.RNN_ACTS_SIMPLE if k is not None)


def _act_arg(v, name, allowed=_ACTS):
    from ..engine import activations as _acts
    n = _acts.canonical(v)
    if n is None or n not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)} or None, got {v!r}"
                         + ("" if n is None else " (the recurrent cells run the activations "
                            "whose derivative follows from their output; the others are "
                            "not available inside recurrent cells yet)"))
    return n


def _bool_arg(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {v!r}")
    return bool(v)


def _ser(obj):
    return None if obj is None else obj.get_config()


class _UnitForgetBias:
    """LSTM bias initializer with unit_forget_bias: [init(u), ones(u), init(2u)]."""

    def __init__(self, base, units):
        self.base = base
        self.units = units

    def __call__(self, shape, rng):
        u = self.units
        return np.concatenate([self.base((u,), rng), np.ones(u, np.float32),
                               self.base((2 * u,), rng)]).astype(np.float32)


class _RNN(Layer):
    """Shared base of SimpleRNN, LSTM and GRU."""

    cell = None
    gates = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False,
                 return_state=False, go_backwards=False, stateful=False, unroll=False,
                 name=None, input_shape=None, trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.units = units_arg(units, "units")
        self.activation = _act_arg(activation, "activation",
                                   _ACTS_SIMPLE if self.cell == "simple" else _ACTS)
        self.recurrent_activation = _act_arg(recurrent_activation, "recurrent_activation")
        self.use_bias = _bool_arg(use_bias, "use_bias")
        self.kernel_initializer = _initializers.get(kernel_initializer)
        self.recurrent_initializer = _initializers.get(recurrent_initializer)
        self.bias_initializer = _initializers.get(bias_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        if activity_regularizer is not None:
            raise ValueError("activity_regularizer is not supported (must be None)")
        self.kernel_constraint = _constraints.get(kernel_constraint)
        self.recurrent_constraint = _constraints.get(recurrent_constraint)
        self.bias_constraint = _constraints.get(bias_constraint)
        self.dropout = rate_arg(dropout, "dropout")
        self.recurrent_dropout = rate_arg(recurrent_dropout, "recurrent_dropout")
        self.seed = seed_arg(seed)
        self.return_sequences = _bool_arg(return_sequences, "return_sequences")
        if return_state:
            raise ValueError("return_state=True is not supported in a Sequential model")
        if stateful:
            raise ValueError("stateful=True is not supported")
        self.go_backwards = _bool_arg(go_backwards, "go_backwards")
        self.unroll = bool(unroll)   # accepted, ignored (the loop is in C either way)
        self.noise_index = 0

    # masks per Keras 3: per gate for both when recurrent_dropout > 0
    @property
    def n_in_masks(self):
        if self.dropout <= 0.0:
            return 0
        return self.gates if self.recurrent_dropout > 0.0 else 1

    @property
    def n_rec_masks(self):
        return self.gates if self.recurrent_dropout > 0.0 else 0

    @property
    def noisy(self):
        return self.dropout > 0.0 or self.recurrent_dropout > 0.0

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def _check_input(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{type(self).__name__} {self.name!r} expects 3-D inputs "
                             f"(batch, timesteps, features); got per-sample input shape "
                             f"{input_shape}")
        if input_shape[1] is None:
            raise ValueError(f"{type(self).__name__} {self.name!r}: the feature axis of "
                             f"input_shape {input_shape} must be known")
        if self.input_shape is not None and self.built and \
                input_shape[1] != self.input_shape[1]:
            raise ValueError(f"{type(self).__name__} {self.name!r} was built for "
                             f"{self.input_shape[1]} features; got inputs of shape "
                             f"{input_shape}")
        return input_shape

    def create_variables(self, input_shape):
        T, F = self._check_input(input_shape)
        Gu = self.gates * self.units
        self.add_weight("kernel", (F, Gu), self.kernel_initializer,
                        regularizer=self.kernel_regularizer,
                        constraint=self.kernel_constraint)
        self.add_weight("recurrent_kernel", (self.units, Gu), self.recurrent_initializer,
                        regularizer=self.recurrent_regularizer,
                        constraint=self.recurrent_constraint)
        if self.use_bias:
            self.add_weight("bias", self._bias_shape(), self._bias_initializer(),
                            regularizer=self.bias_regularizer,
                            constraint=self.bias_constraint)

    def compute_output_shape(self, input_shape):
        T, F = self._check_input(input_shape)
        return (T, self.units) if self.return_sequences else (self.units,)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(
            units=self.units, activation=self.activation, use_bias=self.use_bias,
            kernel_initializer=_init_name(self.kernel_initializer, "kernel_initializer"),
            recurrent_initializer=_init_name(self.recurrent_initializer, "recurrent_initializer"),
            bias_initializer=_init_name(self.bias_initializer, "bias_initializer"),
            kernel_regularizer=_ser(self.kernel_regularizer),
            recurrent_regularizer=_ser(self.recurrent_regularizer),
            bias_regularizer=_ser(self.bias_regularizer),
            kernel_constraint=_ser(self.kernel_constraint),
            recurrent_constraint=_ser(self.recurrent_constraint),
            bias_constraint=_ser(self.bias_constraint),
            dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
            return_sequences=self.return_sequences, go_backwards=self.go_backwards)
        return cfg

    def spec(self, F):
        acts = _core.RNN_ACTS_SIMPLE if self.cell == "simple" else _core.RNN_ACTS
        return (_core.RNN_CELLS[self.cell], acts[self.activation],
                _core.RNN_ACTS[self.recurrent_activation],
                int(getattr(self, "reset_after", True)), int(self.go_backwards),
                int(self.return_sequences), int(F), self.units)

    def make_stage(self):
        return RNNStage(self)


class SimpleRNN(_RNN):
    """Fully-connected RNN: h_t = activation(x_t W + h_{t-1} U + b)."""
    kind = "simple_rnn"

    cell = "simple"
    gates = 1

    def __init__(self, units, activation="tanh", **kwargs):
        if "recurrent_activation" in kwargs:
            raise TypeError("SimpleRNN got an unexpected argument 'recurrent_activation'")
        super().__init__(units, activation=activation, **kwargs)

    def get_config(self):
        return super().get_config()


class LSTM(_RNN):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), Keras gate order i, f, c,
    o: kernel (F, 4u), recurrent_kernel (u, 4u), bias (4u,)."""
    kind = "lstm"

    cell = "lstm"
    gates = 4

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias=True, **kwargs):
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, **kwargs)
        self.unit_forget_bias = _bool_arg(unit_forget_bias, "unit_forget_bias")

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.units)
        return self.bias_initializer

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation,
                   unit_forget_bias=self.unit_forget_bias)
        return cfg


class GRU(_RNN):
    """Gated recurrent unit (Cho et al., 2014), Keras gate order z, r, h.
    reset_after=True (Keras default): bias (2, 3u) = input and recurrent biases, the
    reset gate applied after the recurrent matmul; reset_after=False: bias (3u,)."""
    kind = "gru"

    cell = "gru"
    gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 reset_after=True, **kwargs):
        super().__init__(units, activation=activation,
                         recurrent_activation=recurrent_activation, **kwargs)
        self.reset_after = _bool_arg(reset_after, "reset_after")

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation,
                   reset_after=self.reset_after)
        return cfg






# ------------------------------------------------------------------ Embedding


class Embedding(Layer):
    """Turns token ids (batch, T) into vectors (batch, T, output_dim).
    mask_zero=True: id 0 is padding; the sequence mask skips it in the layers after."""
    kind = "embedding"

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 input_length=None, name=None, input_shape=None, trainable=True, **kwargs):
        if input_shape is None and input_length is not None:
            input_shape = (input_length,)
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.input_dim = units_arg(input_dim, "input_dim")
        self.output_dim = units_arg(output_dim, "output_dim")
        self.embeddings_initializer = _initializers.get(embeddings_initializer)
        self.embeddings_regularizer = _regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = _constraints.get(embeddings_constraint)
        self.mask_zero = _bool_arg(mask_zero, "mask_zero")
        self.input_length = input_length

    def create_variables(self, input_shape):
        self.add_weight("embeddings", (self.input_dim, self.output_dim),
                        self.embeddings_initializer, regularizer=self.embeddings_regularizer,
                        constraint=self.embeddings_constraint)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def validate_inputs(self, x):
        validate_token_ids(x, self.input_dim)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(input_dim=self.input_dim, output_dim=self.output_dim,
                   embeddings_initializer=_init_name(self.embeddings_initializer,
                                                     "embeddings_initializer"),
                   embeddings_regularizer=_ser(self.embeddings_regularizer),
                   embeddings_constraint=_ser(self.embeddings_constraint),
                   mask_zero=self.mask_zero)
        return cfg

    def make_stage(self):
        return EmbeddingStage(self)




# -------------------------------------------------------------- Bidirectional
_MERGE = ("concat", "sum", "ave", "mul")


class Bidirectional(Layer):
    """Runs ``layer`` forward and a go_backwards copy of it, and merges the outputs.
    Weights (Keras order): the forward layer's, then the backward layer's."""
    kind = "bidirectional"

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None,
                 name=None, input_shape=None, trainable=True, **kwargs):
        if isinstance(layer, dict):
            layer = _rnn_from_config(layer)
        if not isinstance(layer, _RNN):
            raise ValueError(f"layer must be a SimpleRNN, LSTM or GRU layer, got {layer!r}")
        if merge_mode not in _MERGE:
            raise ValueError(f"merge_mode must be one of {_MERGE}, got {merge_mode!r}")
        if backward_layer is not None:
            raise ValueError("backward_layer is not supported (a go_backwards copy of "
                             "layer is used)")
        if weights is not None:
            raise ValueError("weights is not supported: use set_weights after building")
        if name is None:
            name = f"bidirectional_{layer.name}"
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        self.merge_mode = merge_mode
        cfg = layer.get_config()
        cfg.pop("input_shape", None)
        cfg["name"] = "forward_" + layer.name
        self.forward_layer = type(layer)(**cfg)
        cfg = dict(cfg, name="backward_" + layer.name, go_backwards=not layer.go_backwards)
        self.backward_layer = type(layer)(**cfg)
        self._inner_config = dict(layer.get_config(), class_name=type(layer).__name__)
        self.return_sequences = layer.return_sequences
        self.noise_index = 0

    @property
    def noisy(self):
        return self.forward_layer.noisy

    @property
    def seed(self):
        return self.forward_layer.seed

    def create_variables(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)
        # the sublayers own their variables (v.layer): kernel, recurrent_kernel, bias of
        # the forward layer, then the backward layer's (Keras get_weights order)
        self.variables.extend(self.forward_layer.variables)
        self.variables.extend(self.backward_layer.variables)

    def compute_output_shape(self, input_shape):
        s = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return s[:-1] + (2 * s[-1],)
        return s

    def get_config(self):
        cfg = super().get_config()
        cfg.update(layer=dict(self._inner_config), merge_mode=self.merge_mode)
        return cfg

    def make_stage(self):
        return BidirectionalStage(self)


def _rnn_from_config(cfg):
    cfg = dict(cfg)
    cls = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}.get(cfg.pop("class_name", None))
    if cls is None:
        raise ValueError(f"layer config must name class_name SimpleRNN, LSTM or GRU")
    return cls(**cfg)




# ------------------------------------------------------------------ pooling 1D
class _GlobalPooling1D(Layer):
    def __init__(self, data_format=None, keepdims=False, name=None, input_shape=None,
                 trainable=True, **kwargs):
        super().__init__(name=name, input_shape=input_shape, trainable=trainable, **kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"data_format must be 'channels_last' (or None), got "
                             f"{data_format!r}")
        self.data_format = "channels_last"
        self.keepdims = _bool_arg(keepdims, "keepdims")

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"{type(self).__name__} {self.name!r} expects 3-D inputs "
                             f"(batch, steps, features); got per-sample shape {input_shape}")
        F = input_shape[1]
        return (1, F) if self.keepdims else (F,)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(data_format=self.data_format, keepdims=self.keepdims)
        return cfg


class GlobalAveragePooling1D(_GlobalPooling1D):
    """Mean over the time axis; honours a sequence mask (mean over real steps), as Keras.
    A sequence with every step masked gives 0 (Keras gives 0/0)."""
    kind = "global_average_pooling1d"

    def make_stage(self):
        return GlobalAveragePooling1DStage([self])


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Max over the time axis (Keras 3 ignores a sequence mask here, so does fastdrop)."""
    kind = "global_max_pooling1d"

    def make_stage(self):
        return GlobalMaxPooling1DStage([self])






RECURRENT_LAYERS = {c.__name__: c for c in (Embedding, SimpleRNN, LSTM, GRU, Bidirectional,
                                             GlobalAveragePooling1D, GlobalMaxPooling1D)}

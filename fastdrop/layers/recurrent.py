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
from ..engine.stage import Stage
from .base import Layer, rate_arg, seed_arg, units_arg
from .base import initializer_config as _init_name

_ACTS = ("tanh", "sigmoid", "relu", "linear", "hard_sigmoid")
_REC_PART = 10


def _act_arg(v, name):
    if v is None:
        v = "linear"
    if v not in _ACTS:
        raise ValueError(f"{name} must be one of {_ACTS} or None, got {v!r}")
    return v


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
        self.activation = _act_arg(activation, "activation")
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
        return (_core.RNN_CELLS[self.cell], _core.RNN_ACTS[self.activation],
                _core.RNN_ACTS[self.recurrent_activation],
                int(getattr(self, "reset_after", True)), int(self.go_backwards),
                int(self.return_sequences), int(F), self.units)

    def make_stage(self):
        return RNNStage(self)


class SimpleRNN(_RNN):
    """Fully-connected RNN: h_t = activation(x_t W + h_{t-1} U + b)."""

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


def _mask_bytes(rows, per_sample):
    return ((rows * per_sample + 7) // 8 + 63) // 64 * 64


class RNNStage(Stage):
    """One recurrent layer; ``part_base`` offsets the noise parts (Bidirectional)."""

    def __init__(self, layer, index=0, part_base=0):
        super().__init__([layer], index)
        self.layer = layer
        self.part_base = part_base

    @property
    def noisy(self):
        return self.layer.noisy

    def bind(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[0] is None:
            raise ValueError(f"layer {self.layer.name!r} expects inputs (batch, timesteps, "
                             f"features); got per-sample shape {in_shape}")
        return super().bind(in_shape)

    def buffers(self, capacity):
        L = self.layer
        T, F = self.in_shape
        ws = _core.rnn_workspace_floats(L.spec(F), capacity, T, L.n_in_masks, L.n_rec_masks)
        return {"out": ((capacity,) + self.out_shape, np.float32),
                "dx": ((capacity,) + self.in_shape, np.float32),
                "ws": ((int(ws),), np.float32),
                "in_mask": ((max(1, L.n_in_masks), _mask_bytes(capacity, F)), np.uint8),
                "rec_mask": ((max(1, L.n_rec_masks), _mask_bytes(capacity, L.units)),
                             np.uint8),
                "seq": ((capacity, T), np.uint8)}

    def _prepare(self, ctx):
        L = self.layer
        T, F = self.in_shape
        m = ctx.m
        in_mask = rec_mask = None
        in_scale = rec_scale = 1.0
        if ctx.noise and L.n_in_masks:
            in_mask = self.buf["in_mask"][:L.n_in_masks]
            for k in range(L.n_in_masks):
                ctx.mask(in_mask[k], L.dropout, F, L.noise_index, L.seed,
                         part=self.part_base + 1 + k)
            in_scale = float(np.float32(1.0 / (1.0 - L.dropout)))
        if ctx.noise and L.n_rec_masks:
            rec_mask = self.buf["rec_mask"][:L.n_rec_masks]
            for k in range(L.n_rec_masks):
                ctx.mask(rec_mask[k], L.recurrent_dropout, L.units, L.noise_index, L.seed,
                         part=self.part_base + _REC_PART + 1 + k)
            rec_scale = float(np.float32(1.0 / (1.0 - L.recurrent_dropout)))
        seq = None
        if ctx.seq_mask is not None:
            sm = ctx.seq_mask
            if sm.shape != (m, T):
                raise ValueError(f"layer {L.name!r}: sequence mask of shape {sm.shape} "
                                 f"does not match inputs ({m}, {T}, ...)")
            seq = self.buf["seq"][:m]
            np.not_equal(sm, 0, out=seq.view(np.bool_))
        self._call = (in_mask, in_scale, rec_mask, rec_scale, seq)

    def forward(self, ctx, x):
        L = self.layer
        if x.ndim != 3 or x.shape[1:] != self.in_shape:
            raise ValueError(f"layer {L.name!r} expects inputs of shape (batch, "
                             f"{self.in_shape[0]}, {self.in_shape[1]}); got {x.shape}")
        x = np.ascontiguousarray(x, np.float32)
        self._prepare(ctx)
        in_mask, in_scale, rec_mask, rec_scale, seq = self._call
        y = self.buf["out"][:ctx.m]
        _core.rnn_forward(L.spec(self.in_shape[1]), x, L.kernel, L.recurrent_kernel,
                          L.bias if L.use_bias else None, y, self.buf["ws"], in_mask,
                          in_scale, rec_mask, rec_scale, seq)
        return y

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        T, F = self.in_shape
        in_mask, in_scale, rec_mask, rec_scale, seq = self._call
        dy = np.ascontiguousarray(dy, np.float32).reshape((ctx.m,) + self.out_shape)
        dx = self.buf["dx"][:ctx.m] if need_dx else None
        _core.rnn_backward(L.spec(F), ctx.m, T, L.kernel, L.recurrent_kernel, dy, dx,
                           L.dkernel, L.drecurrent_kernel, L.dbias if L.use_bias else None,
                           self.buf["ws"], in_mask, in_scale, rec_mask, rec_scale, seq)
        return dx


# ------------------------------------------------------------------ Embedding
def validate_token_ids(x, input_dim, name="inputs"):
    """ValueError unless every value of x is an integer in [0, input_dim)."""
    x = np.asarray(x)
    if x.size == 0:
        return
    if x.dtype.kind == "f":
        if not np.isfinite(x).all() or (np.floor(x) != x).any():
            raise ValueError(f"{name} to Embedding must be integer token ids; got "
                             "non-integral or non-finite values")
    elif x.dtype.kind not in "iub":
        raise ValueError(f"{name} to Embedding must be integer token ids, got {x.dtype}")
    lo, hi = x.min(), x.max()
    if lo < 0:
        raise ValueError(f"{name} to Embedding must be token ids in [0, {input_dim}); got "
                         f"a negative id {lo}")
    if hi >= input_dim:
        raise ValueError(f"{name} to Embedding must be token ids in [0, input_dim="
                         f"{input_dim}); got id {hi}")


class Embedding(Layer):
    """Turns token ids (batch, T) into vectors (batch, T, output_dim).
    mask_zero=True: id 0 is padding; the sequence mask skips it in the layers after."""

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


class EmbeddingStage(Stage):
    def __init__(self, layer, index=0):
        super().__init__([layer], index)
        self.layer = layer

    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["mask"] = ((capacity,) + self.in_shape, np.bool_)
        return b

    def forward(self, ctx, x):
        L = self.layer
        if x.shape[1:] != self.in_shape:
            raise ValueError(f"layer {L.name!r} expects inputs of shape (batch, "
                             f"{', '.join(map(str, self.in_shape))}); got {x.shape}")
        validate_token_ids(x, L.input_dim)
        x = np.ascontiguousarray(x, np.float32)
        self._ids = x
        y = self.buf["out"][:ctx.m]
        _core.embedding_forward(x.reshape(-1), L.embeddings, y)
        if L.mask_zero:
            np.not_equal(x, 0, out=self.buf["mask"][:ctx.m])
        return y

    def mask_out(self, ctx, mask):
        if not self.layer.mask_zero:
            return None
        return self.buf["mask"][:ctx.m]

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        if L.trainable and getattr(L, "dembeddings", None) is not None:
            dy = np.ascontiguousarray(dy, np.float32)
            _core.embedding_backward(self._ids.reshape(-1), dy, L.dembeddings)
        if need_dx:
            dx = self.buf["dx"][:ctx.m]
            dx[...] = 0.0
            return dx
        return None


# -------------------------------------------------------------- Bidirectional
_MERGE = ("concat", "sum", "ave", "mul")


class Bidirectional(Layer):
    """Runs ``layer`` forward and a go_backwards copy of it, and merges the outputs.
    Weights (Keras order): the forward layer's, then the backward layer's."""

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


class BidirectionalStage(Stage):
    def __init__(self, layer, index=0):
        super().__init__([layer], index)
        self.layer = layer
        self.fwd = RNNStage(layer.forward_layer, index, part_base=0)
        self.bwd = RNNStage(layer.backward_layer, index, part_base=100)

    @property
    def noisy(self):
        return self.layer.noisy

    def bind(self, in_shape):
        self.fwd.bind(in_shape)
        self.bwd.bind(in_shape)
        return super().bind(in_shape)

    def buffers(self, capacity):
        b = super().buffers(capacity)
        for tag, st in (("f/", self.fwd), ("b/", self.bwd)):
            for k, v in st.buffers(capacity).items():
                b[tag + k] = v
        return b

    def forward(self, ctx, x):
        for st in (self.fwd, self.bwd):
            st.layer.noise_index = self.layer.noise_index
        self.fwd.buf = {k[2:]: v for k, v in self.buf.items() if k.startswith("f/")}
        self.bwd.buf = {k[2:]: v for k, v in self.buf.items() if k.startswith("b/")}
        yf = self.fwd.forward(ctx, x)
        yb = self.bwd.forward(ctx, x)
        if self.layer.return_sequences:
            yb = yb[:, ::-1]
        out = self.buf["out"][:ctx.m]
        mode = self.layer.merge_mode
        if mode == "concat":
            u = yf.shape[-1]
            out[..., :u] = yf
            out[..., u:] = yb
        elif mode == "sum":
            np.add(yf, yb, out=out)
        elif mode == "ave":
            np.add(yf, yb, out=out)
            out *= np.float32(0.5)
        else:
            np.multiply(yf, yb, out=out)
        return out

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        dy = dy.reshape((m,) + self.out_shape)
        yf = self.fwd.buf["out"][:m]
        yb = self.bwd.buf["out"][:m]
        rs = self.layer.return_sequences
        ybm = yb[:, ::-1] if rs else yb
        mode = self.layer.merge_mode
        if mode == "concat":
            u = yf.shape[-1]
            dyf, dyb = dy[..., :u], dy[..., u:]
        elif mode == "sum":
            dyf = dyb = dy
        elif mode == "ave":
            dyf = dyb = dy * np.float32(0.5)
        else:
            dyf, dyb = dy * ybm, dy * yf
        if rs:
            dyb = dyb[:, ::-1]
        dxf = self.fwd.backward(ctx, np.ascontiguousarray(dyf), need_dx)
        dxb = self.bwd.backward(ctx, np.ascontiguousarray(dyb), need_dx)
        if not need_dx:
            return None
        dx = self.buf["dx"][:m]
        np.add(dxf, dxb, out=dx)
        return dx

    def mask_out(self, ctx, mask):
        return mask if self.layer.return_sequences else None


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

    def make_stage(self):
        return GlobalAveragePooling1DStage([self])


class GlobalMaxPooling1D(_GlobalPooling1D):
    """Max over the time axis (Keras 3 ignores a sequence mask here, so does fastdrop)."""

    def make_stage(self):
        return GlobalMaxPooling1DStage([self])


class GlobalAveragePooling1DStage(Stage):
    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["w"] = ((capacity, self.in_shape[0]), np.float32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        T, F = self.in_shape
        w = self.buf["w"][:m]
        if ctx.seq_mask is not None:
            np.copyto(w, ctx.seq_mask)
            cnt = w.sum(1, keepdims=True)
            np.maximum(cnt, 1.0, out=cnt)
            w /= cnt
        else:
            w[...] = np.float32(1.0 / T)
        out = self.buf["out"][:m].reshape(m, F)
        np.matmul(w[:, None, :], x.reshape(m, T, F), out=out[:, None, :])
        return self.buf["out"][:m]

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        T, F = self.in_shape
        dx = self.buf["dx"][:m]
        np.multiply(self.buf["w"][:m, :, None], dy.reshape(m, 1, F), out=dx)
        return dx

    def mask_out(self, ctx, mask):
        return None


class GlobalMaxPooling1DStage(Stage):
    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["arg"] = ((capacity, self.in_shape[1]), np.intp)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        T, F = self.in_shape
        x = x.reshape(m, T, F)
        arg = self.buf["arg"][:m]
        np.argmax(x, axis=1, out=arg)
        out = self.buf["out"][:m].reshape(m, F)
        np.max(x, axis=1, out=out)
        return self.buf["out"][:m]

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        T, F = self.in_shape
        dx = self.buf["dx"][:m]
        dx[...] = 0.0
        np.put_along_axis(dx, self.buf["arg"][:m][:, None, :], dy.reshape(m, 1, F), axis=1)
        return dx

    def mask_out(self, ctx, mask):
        return None


RECURRENT_LAYERS = {c.__name__: c for c in (Embedding, SimpleRNN, LSTM, GRU, Bidirectional,
                                             GlobalAveragePooling1D, GlobalMaxPooling1D)}

"""``Sequential``: a Keras-like model that trains and runs on fastdrop's C kernels.

Execution model (Engine v2, see ``fastdrop.engine``)
----------------------------------------------------
Layers are configuration: ``build(input_shape)`` infers per-sample shapes and declares
variables.  A plan of fusion rules turns the layers into stages (``Dense [+act]
[+Dropout]`` is one GEMM with a fused epilogue: bias, ReLU and the dropout bit mask);
each stage has a forward/backward pair over buffers one arena allocates per batch
capacity.  A final softmax (sigmoid) is fused with its cross-entropy loss: the loss
receives logits, ``predict`` applies the activation.

All weights live in one contiguous float32 block (layers hold views), so do their
gradients; non-trainable state (BatchNorm's moving statistics) lives in a second block.
The optimizer updates the trainable ranges with one fused kernel.  Results are bitwise
identical for any thread count.

Modes: TRAIN (noise on, batch statistics, updates), INFER, MC (noise on, everything else
as INFER).  A sample's dropout mask is keyed by its global index, so MC predictions do
not depend on ``batch_size`` or on the other samples in the call.

Input conversion: ``fit``/``evaluate``/``predict`` accept lists and arrays of any real
dtype and layout; they are converted once to C-contiguous float32 (a copy only when
needed).  The per-sample shape must match the model's input shape.
"""
import numbers
import threading

import numpy as np

from .. import random as _random
from .. import registry as _registry
from ..engine import INFER, Arena, Context, make_plan
from ..engine import activations as _acts
from ..engine.stage import IdentityStage
from ..engine.variables import VariableStore
from ..layers.base import Layer
from . import _distribution as _dp_state
from ._args import _shape_fits, _shape_str
from .trainer import NonFiniteLossError, Trainer  # noqa: F401


class Sequential(Trainer):
    """A linear stack of layers, as ``keras.Sequential``.

    >>> model = Sequential([Input((784,)), Dense(256, activation='relu'), Dropout(0.5),
    ...                     Dense(10, activation='softmax')], seed=0)
    >>> model.compile(optimizer='adam', loss='sparse_categorical_crossentropy',
    ...               metrics=['accuracy'])
    >>> history = model.fit(x, y, batch_size=128, epochs=10)

    seed: seeds weight initialisation, shuffling and dropout masks (default: from
    ``fastdrop.set_seed`` if called, else random).  A model whose input shape is known
    (``Input``, or ``input_shape``/``input_dim`` on the first layer) is built at once.
    """

    def __init__(self, layers=None, seed=None, name=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = int(seed) if seed is not None else _random.next_seed()
        self.name = name or "sequential"
        self._layers = []          # as added, InputLayer included
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.weighted_metrics = []
        self.compiled = False
        self.built = False
        self.stop_training = False
        self.history = None
        self._stages = None
        self._store = None
        self._step = 0             # global training step (keys dropout masks)
        self._input_shape = None
        self._bound = None         # concrete per-sample input shape the stages are bound to
        self._capacity = 0
        self._arena = Arena()
        self._head = None
        self._x_cast = None        # Input(dtype=<int/bool>): the dtype inputs are cast to
        # fit/evaluate/predict share the model's buffers: one call at a time per model
        # (kernels release the GIL, so other models and threads run meanwhile)
        self._lock = threading.RLock()
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ layers
    @property
    def layers(self):
        """The model's layers (the InputLayer excluded, as in Keras)."""
        from ..layers.core import InputLayer
        return [l for l in self._layers if not isinstance(l, InputLayer)]

    def add(self, layer):
        """Append a layer; the model is (re)built at once when its input shape is known."""
        from ..layers.core import InputLayer
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a fastdrop.layers.Layer, got {type(layer).__name__}")
        if isinstance(layer, InputLayer) and self._layers:
            raise ValueError("an Input layer can only be the first layer of a Sequential model")
        if any(l is layer for l in self._layers):
            raise ValueError(f"layer {layer.name!r} is already in the model")
        names = {l.name for l in self._layers}
        if layer.name in names:
            raise ValueError(f"the model already has a layer named {layer.name!r}; layer names "
                             "must be unique")
        self._layers.append(layer)
        self._invalidate()
        try:
            self._maybe_build()
        except Exception:
            self._layers.pop()
            self._invalidate()
            self._maybe_build()
            raise

    def pop(self):
        """Remove the last layer."""
        if not self.layers:
            raise ValueError("the model has no layers to pop")
        self._layers.pop()
        self._invalidate()
        self._maybe_build()

    def _invalidate(self):
        self.built = False
        self._stages = None
        self._bound = None
        self._capacity = 0

    def get_layer(self, name=None, index=None):
        """A layer by name or by index in ``model.layers`` (as Keras)."""
        if (name is None) == (index is None):
            raise ValueError("give exactly one of name= or index=")
        if index is not None:
            layers = self.layers
            if isinstance(index, bool) or not isinstance(index, numbers.Integral) \
                    or not -len(layers) <= index < len(layers):
                raise ValueError(f"index must be an integer in [0, {len(layers)}), got {index!r}")
            return layers[index]
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def _declared_input_shape(self):
        """The input shape the layers declare: the first layer's, or that of the first
        declaring layer after shape-preserving ones (noise, activations)."""
        from ..layers.core import Activation
        from ..layers.noise import _NoiseLayer
        for layer in self._layers:
            if layer.declared_input_shape is not None:
                return layer.declared_input_shape
            if not isinstance(layer, (_NoiseLayer, Activation)):
                return None
        return None

    @property
    def input_shape(self):
        """(None, *per-sample shape), as Keras; None before the shape is known."""
        s = self._input_shape or self._declared_input_shape()
        return None if s is None else (None,) + tuple(s)

    @property
    def output_shape(self):
        if not self.built:
            return None
        return (None,) + tuple(self._out_shape)

    # v1 names
    @property
    def input_dim(self):
        return None if self._input_shape is None else int(np.prod(
            [d for d in self._input_shape if d is not None]))

    @property
    def output_dim(self):
        return None if not self.built else int(np.prod(
            [d for d in self._out_shape if d is not None]))

    # ------------------------------------------------------------------ building
    def _maybe_build(self):
        if self.layers and self._declared_input_shape() is not None:
            self._build(self._declared_input_shape())

    def build(self, input_shape=None):
        """Build for ``input_shape``: Keras's batch shape ``(None, *sample_shape)``, or an
        int (features).  Without it the shape the layers declare is used."""
        if input_shape is None:
            shape = self._declared_input_shape()
            if shape is None:
                raise ValueError("the model has no input shape yet: start it with "
                                 "Input(shape=...), give the first layer input_shape=..., or "
                                 "call fit() first")
        elif isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
            shape = (int(input_shape),)
        else:
            shape = tuple(input_shape)
            if len(shape) < 2:
                raise ValueError(f"input_shape must be a batch shape (None, *sample_shape), "
                                 f"got {input_shape!r}")
            shape = shape[1:]
        self._build(shape)

    def _build(self, shape):
        from ..layers.core import InputLayer
        if not self.layers:
            raise ValueError("the model has no layers")
        shape = tuple(shape)
        declared = self._declared_input_shape()
        if declared is not None and not _shape_fits(declared, shape):
            raise ValueError(f"x has per-sample shape {_shape_str(shape)} but the model expects "
                             f"{_shape_str(declared)}" + self._flatten_hint(declared, shape))
        # keep the values of variables that exist already (an earlier build, set_weights)
        old = {}
        if self._store is not None:
            for v in self._store.vars:
                old[(id(v.layer), v.name)] = np.array(v.value)
        s = shape
        noise_index = 0
        for k, layer in enumerate(self._layers):
            layer._model_index = k
            if isinstance(layer, InputLayer):
                continue
            s = layer.build(s)
            if hasattr(layer, "noise_index"):
                noise_index += 1
                layer.noise_index = noise_index
            for v in layer.variables:
                prev = old.get((id(layer), v.name))
                if prev is not None and prev.shape == v.shape:
                    v.value = prev
        self._input_shape = shape
        self._x_cast = self._input_cast()
        self._out_shape = tuple(s)
        self._store = VariableStore(self.layers, self.seed)
        self.built = True
        self._plan()
        if self.optimizer is not None:
            self.optimizer.build(self._store.params.size)

    @staticmethod
    def _flatten_hint(declared, got):
        if len(got) > 1 and len(declared) == 1 and \
                int(np.prod([d or 0 for d in got])) == declared[0]:
            return " (add Flatten() as the first layer, or x.reshape(len(x), -1))"
        if len(got) == 1 and len(declared) > 1 and \
                int(np.prod([d or 0 for d in declared])) == got[0]:
            return f" (reshape x to (n, {', '.join(str(d) for d in declared)}))"
        if len(got) == 3 and len(declared) == 3 and got[0] == declared[2] \
                and got[1:] == declared[:2]:
            return " (the data looks channels-first; fastdrop is channels-last: " \
                   "x.transpose(0, 2, 3, 1))"
        return ""

    # v1 block names
    @property
    def _params(self):
        return self._store.params

    @property
    def _grads(self):
        return self._store.grads

    def _final_activation(self):
        from ..layers.core import Activation, Dense
        last = self.layers[-1]
        if isinstance(last, (Dense, Activation)) and last.activation in _acts.HEADS:
            return last, last.activation
        return last, None

    def _plan(self):
        """Decide the loss head and build the stages (re-done when the loss changes)."""
        from ..layers.core import Activation
        layers = self.layers
        for l in layers:
            l._plan_act = None
        last, act = self._final_activation()
        self._head = None
        loss = self.loss
        fused = act is not None and (loss is None or (loss.head == act and not loss.from_logits))
        if fused:
            # the final softmax/sigmoid fused with its cross-entropy (or applied by the
            # head when there is no loss); any other loss sees the activation's output
            self._head = act
            if isinstance(last, Activation):
                layers = layers[:-1]
            else:
                last._plan_act = "linear"
        self._run_layers = layers
        plan = make_plan(layers) if layers else []
        self._stages = [p[0] for p in plan] or [IdentityStage([])]
        self._bound = None
        self._capacity = 0
        store = self._store
        # backward runs from the last stage down to the first one with trainable variables
        self._first_trainable = next(
            (i for i, s in enumerate(self._stages)
             if any(store.is_trainable(v) for l in s.layers for v in l.variables)),
            len(self._stages))
        # no sequence masks anywhere: the forward loop needs no mask bookkeeping
        base_mask_out = IdentityStage.mask_out
        self._plain = all(type(s).mask_out is base_mask_out for s in self._stages)
        self._infer_ctx = Context(INFER, 1)
        self._first_noisy = next((i for i, s in enumerate(self._stages) if s.noisy),
                                 len(self._stages))

    def _check_loss_fits_model(self):
        loss = self.loss
        last, act = self._final_activation()
        if act == "softmax" and self._head is None and loss.from_logits:
            raise ValueError(f"loss {loss.name!r} was given from_logits=True but the last "
                             "layer applies softmax: drop the activation (the loss applies "
                             "it) or use from_logits=False")
        if loss.head is not None and not loss.from_logits and self._head != loss.head:
            raise ValueError(f"loss {loss.name!r} needs a final {loss.head} activation "
                             f"(Dense(units, activation={loss.head!r})), or from_logits=True "
                             "with a linear last layer")

    def _ensure(self, sample_shape, rows):
        """Bind the stages to a concrete per-sample shape and allocate >= rows."""
        if self._bound != sample_shape:
            s = sample_shape
            for st in self._stages:
                s = st.bind(s)
            self._bound = sample_shape
            self._bound_out = s
            self._capacity = 0
        if rows > self._capacity:
            self._extra = self._arena.allocate(
                self._stages, rows,
                {"dlogits": ((rows,) + self._bound_out, np.float32)})
            self._capacity = rows


    # ------------------------------------------------------------------ weights
    def _require_built(self):
        if not self.built:
            raise RuntimeError("the model has not been built yet (its input shape is unknown):"
                               " start it with Input(shape=...), give the first layer "
                               "input_shape=..., or call fit()")

    @property
    def variables(self):
        self._require_built()
        return list(self._store.vars)

    @property
    def trainable_weights(self):
        self._require_built()
        return [v.value for v in self._store.vars if self._store.is_trainable(v)]

    @property
    def non_trainable_weights(self):
        self._require_built()
        return [v.value for v in self._store.vars if not self._store.is_trainable(v)]

    def get_weights(self):
        """Copies of all weights in Keras order, layer by layer: e.g. [W0 (in, out), b0,
        W1, b1, ...], a BatchNormalization's [gamma, beta, moving_mean, moving_variance]."""
        self._require_built()
        return [np.array(v.value) for v in self._store.vars]

    def set_weights(self, weights):
        """Set all weights from a list in Keras order (shapes must match exactly)."""
        self._require_built()
        weights = list(weights)
        vars_ = self._store.vars
        if len(weights) != len(vars_):
            raise ValueError(f"weights must be a list of {len(vars_)} arrays, got "
                             f"{len(weights)}")
        arrs = []
        for i, (v, w) in enumerate(zip(vars_, weights)):
            w = np.asarray(w)
            if w.shape != v.shape:
                raise ValueError(f"weights[{i}] ({v.layer.name}/{v.name}) must have shape "
                                 f"{v.shape}, got {w.shape}")
            if w.dtype.kind not in "iuf" or not np.isfinite(w).all():
                raise ValueError(f"weights[{i}] must be finite real numbers")
            arrs.append(w)
        for v, w in zip(vars_, arrs):
            v.value[...] = w

    def count_params(self):
        self._require_built()
        return int(self._store.params.size + self._store.state.size)

    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts (Keras style)."""
        self._require_built()
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         _shape_str((None,) + tuple(layer.output_shape)),
                         f"{layer.count_params():,}"))
        w = [max(len(r[i]) for r in rows) + 3 for i in range(3)]
        line = "_" * sum(w)
        out = [f'Model: "{self.name}"', line]
        for k, r in enumerate(rows):
            out.append("".join(c.ljust(w[i]) for i, c in enumerate(r)))
            out.append("=" * sum(w) if k == 0 else line)
        trainable, non_trainable = self._store.counts()
        out.append(f"Total params: {trainable + non_trainable:,}")
        out.append(f"Trainable params: {trainable:,}")
        out.append(f"Non-trainable params: {non_trainable:,}")
        text = "\n".join(out)
        if print_fn is not None:
            print_fn(text)
        return text

    # ------------------------------------------------------------------- config
    def get_config(self):
        return {"name": self.name, "seed": self.seed,
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self._layers]}

    @classmethod
    def from_config(cls, config):
        """A new, untrained model with the architecture of ``get_config()``."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("config must be a dict with a 'layers' list (from get_config())")
        model = cls(seed=config.get("seed"), name=config.get("name"))
        for spec in config["layers"]:
            cls_ = _registry.layer_class(spec.get("class_name")) if isinstance(spec, dict) else None
            if cls_ is None:
                raise ValueError(f"unknown layer type in config: {spec!r:.80}")
            model.add(cls_.from_config(dict(spec["config"])))
        return model

    # ------------------------------------------------------------------- saving
    def save(self, filepath):
        """Save config, weights, state, optimizer state and step counter to ``filepath``
        atomically (temporary file + rename).  No pickle is used.  The file name picks the
        format: ``.keras`` a Keras 3 archive, ``.h5`` a legacy Keras HDF5 file (both open in
        ``keras.models.load_model``), any other name fastdrop's own format (``.fdm``)."""
        from ..io.formats import save
        with self._lock:
            dp = _dp_state.active()
            if dp is not None:       # fastdrop.distributed: rank 0 writes
                return dp.rank0_write(lambda: save(self, filepath))
            save(self, filepath)

    def export(self, filepath, format="onnx", mc_dropout=False, opset=17, verbose=None):
        """Export the model for serving elsewhere (Keras 3's ``Model.export`` spelling).

        format='onnx' (the only one): an ONNX file (opset >= 17, dynamic batch axis, input
        ``"input"``, output ``"output"`` equal to ``predict``), written with the ``onnx``
        package (``pip install "fastdrop-engine[onnx]"``).  ``mc_dropout=True`` keeps
        Monte Carlo dropout: every run of the exported model draws new masks (one MC pass
        of ``predict(x, mc_samples=T)``).  See ``fastdrop.io.onnx``.  ``verbose`` is
        accepted for Keras compatibility and ignored."""
        if not isinstance(format, str) or format.lower() != "onnx":
            raise NotImplementedError(
                f"export format {format!r} is not supported; fastdrop exports format='onnx' "
                "(save fastdrop's own format with model.save)")
        from ..io.onnx import export_onnx
        with self._lock:
            dp = _dp_state.active()
            if dp is not None:       # fastdrop.distributed: rank 0 writes
                return dp.rank0_write(lambda: export_onnx(self, filepath, mc_dropout=mc_dropout,
                                                          opset=opset), "export")
            return export_onnx(self, filepath, mc_dropout=mc_dropout, opset=opset)

    def save_weights(self, filepath):
        """Save the weights (and state variables) only, atomically, in fastdrop's own
        format; ``load_weights`` reads them into a model of the same architecture."""
        from ..io.native import save_weights
        with self._lock:
            dp = _dp_state.active()
            if dp is not None:       # fastdrop.distributed: rank 0 writes
                return dp.rank0_write(lambda: save_weights(self, filepath), "save_weights")
            save_weights(self, filepath)

    def load_weights(self, filepath):
        from ..io.native import load_weights
        with self._lock:
            load_weights(self, filepath)

    def __getstate__(self):
        from ..io.native import model_to_bytes
        with self._lock:
            return {"fastdrop_model": model_to_bytes(self)}

    def __setstate__(self, state):
        from ..io.native import model_from_bytes
        other = model_from_bytes(state["fastdrop_model"])
        self.__dict__.update(other.__dict__)

    def __deepcopy__(self, memo):
        import copy  # noqa: F401
        from ..io.native import model_from_bytes, model_to_bytes
        with self._lock:
            return model_from_bytes(model_to_bytes(self))

    def __repr__(self):
        return f"<Sequential {self.name!r} layers={[l.name for l in self.layers]}>"


def load_model(filepath):
    """Load a model saved by ``Sequential.save``, or a Keras ``.keras`` / ``.h5`` model
    (a Sequential or single-chain Functional model), the format told by the file's content
    (ValueError on a corrupt, truncated or foreign file; never unpickles).  Files of the
    previous fastdrop format load too."""
    from ..io.formats import load as _load
    return _load(filepath)


_registry.register_model(Sequential)

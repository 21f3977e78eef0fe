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
import io
import math
import numbers
import threading
import time

import numpy as np

from . import _core
from . import callbacks as _callbacks
from . import losses as _losses
from . import optimizers as _optimizers
from . import random as _random
from .engine import INFER, MC, TRAIN, Arena, Context, make_plan
from .engine import activations as _acts
from .engine.stage import IdentityStage
from .engine.variables import VariableStore
from .layers.base import Layer


class NonFiniteLossError(FloatingPointError):
    """Raised by ``fit`` when the loss becomes NaN or infinite."""


def _int_arg(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _shape_str(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _shape_fits(declared, got):
    return len(declared) == len(got) and all(d is None or d == g for d, g in zip(declared, got))


_ACCURACY = ("accuracy", "acc")
_METRICS = _ACCURACY + ("categorical_accuracy", "sparse_categorical_accuracy",
                        "binary_accuracy", "mae", "mean_absolute_error", "mse",
                        "mean_squared_error")


class Sequential:
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
        # fit/evaluate/predict share the model's buffers: one call at a time per model
        # (kernels release the GIL, so other models and threads run meanwhile)
        self._lock = threading.RLock()
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------ layers
    @property
    def layers(self):
        """The model's layers (the InputLayer excluded, as in Keras)."""
        from .layers.core import InputLayer
        return [l for l in self._layers if not isinstance(l, InputLayer)]

    def add(self, layer):
        """Append a layer; the model is (re)built at once when its input shape is known."""
        from .layers.core import InputLayer
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
        from .layers.core import Activation
        from .layers.noise import _NoiseLayer
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
        from .layers.core import InputLayer
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
        from .layers.core import Activation, Dense
        last = self.layers[-1]
        if isinstance(last, (Dense, Activation)) and last.activation in _acts.HEADS:
            return last, last.activation
        return last, None

    def _plan(self):
        """Decide the loss head and build the stages (re-done when the loss changes)."""
        from .layers.core import Activation
        layers = self.layers
        for l in layers:
            l._plan_act = None
        last, act = self._final_activation()
        self._head = None
        loss = self.loss
        fused = act is not None and (loss is None or (loss.head == act and not loss.from_logits))
        if fused or act == "softmax":
            # a softmax only runs fused with its loss; a mismatch is reported at fit
            self._head = act if fused else None
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
        if act == "softmax" and self._head is None:
            if loss.from_logits:
                raise ValueError(f"loss {loss.name!r} was given from_logits=True but the last "
                                 "layer applies softmax: drop the activation (the loss applies "
                                 "it) or use from_logits=False")
            raise ValueError(f"loss {loss.name!r} does not go with a final softmax")
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

    # ----------------------------------------------------------------- compiling
    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configure training.  optimizer: a name ('adam', 'sgd', 'adamw', ...) or an
        Optimizer; loss: a name ('sparse_categorical_crossentropy' for integer labels,
        'categorical_crossentropy' for one-hot targets, 'binary_crossentropy', 'mse', ...)
        or a Loss; metrics: e.g. ['accuracy'] (resolved from the loss as Keras does)."""
        if kwargs:
            raise TypeError(f"compile got unexpected arguments {sorted(kwargs)}")
        if loss is None:
            raise ValueError("loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        if isinstance(metrics, str):
            metrics = [metrics]
        metrics = list(metrics or [])
        for m in metrics:
            if m not in _METRICS:
                raise ValueError(f"metrics may contain {list(_METRICS)}, got {m!r}")
        self.metrics = metrics
        self.compiled = True
        if self.built:
            self._plan()
            self.optimizer.build(self._store.params.size)

    def _metric_fns(self):
        """[(log name, fn(out, logits, y) -> (sum, count))] for the compiled metrics."""
        loss = self.loss
        out_dim = self.output_dim
        fns = []
        for m in self.metrics:
            kind = m
            if m in _ACCURACY:
                if loss.sparse:
                    kind = "sparse_categorical_accuracy"
                elif loss.head == "sigmoid" or out_dim == 1:
                    kind = "binary_accuracy"
                else:
                    kind = "categorical_accuracy"
            name = {"mean_absolute_error": "mae", "mean_squared_error": "mse"}.get(m, m)
            if m in _ACCURACY:
                name = "accuracy"
            fns.append((name, self._metric(kind)))
        return fns

    def _metric(self, kind):
        head = self._head
        if kind == "sparse_categorical_accuracy":
            def f(out, z, y):
                if not self.loss.sparse:
                    y = y.argmax(axis=1)
                return int(np.count_nonzero(z.argmax(axis=1) == y)), z.shape[0]
        elif kind == "categorical_accuracy":
            def f(out, z, y):
                t = y if y.ndim == 1 else y.argmax(axis=1)
                return int(np.count_nonzero(z.argmax(axis=1) == t)), z.shape[0]
        elif kind == "binary_accuracy":
            def f(out, z, y):
                pred = (z > 0) if head == "sigmoid" else (z > 0.5)
                yy = y.reshape(pred.shape) if y.size == pred.size else y
                return int(np.count_nonzero(pred == (yy > 0.5))), pred.size
        else:
            sq = kind in ("mse", "mean_squared_error")

            def f(out, z, y):
                p = self._apply_head(z) if out is None else out
                d = p.astype(np.float64) - np.asarray(y, np.float64).reshape(p.shape)
                return float((d * d).mean(axis=1).sum() if sq else np.abs(d).mean(axis=1).sum()), \
                    p.shape[0]
        return f

    # ---------------------------------------------------------------- data input
    def _convert_x(self, x, name="x", check_finite=True, allow_empty=False):
        if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
            arr = x
        else:
            if not isinstance(x, np.ndarray):
                try:
                    x = np.asarray(x)
                except Exception as e:
                    raise TypeError(f"{name} must be array-like of numbers: {e}") from None
            if x.dtype == object or x.dtype.kind not in "biuf":
                raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
            arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.ndim == 0:
            raise ValueError(f"{name} must be an array of samples, got a scalar")
        expect = self._input_shape or self._declared_input_shape()
        if arr.ndim == 1:
            if expect is not None and len(expect) == 1 and expect[0] != 1 \
                    and arr.shape[0] == expect[0]:
                raise ValueError(f"{name} must be 2-D (samples, features), got shape "
                                 f"{arr.shape}; use x.reshape(1, -1) for a single sample")
            raise ValueError(f"{name} must be 2-D (samples, features), got shape {arr.shape}; "
                             f"use x.reshape(-1, 1) for a single feature or x.reshape(1, -1) "
                             f"for a single sample")
        if arr.shape[0] == 0 and not allow_empty:
            raise ValueError(f"{name} is empty (0 samples)")
        got = arr.shape[1:]
        if expect is not None and not _shape_fits(expect, got):
            raise ValueError(f"{name} has per-sample shape {_shape_str(got)} but the model "
                             f"expects {_shape_str(expect)}" + self._flatten_hint(expect, got))
        if check_finite and not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return arr

    def _require_compiled(self, what, x, y):
        if not self.compiled:
            raise RuntimeError(f"the model must be compiled before {what}(): call "
                               "model.compile(optimizer=..., loss=...)")
        if x is None or y is None:
            raise ValueError(f"{what} needs x and y")

    def _inputs(self, x, y, sample_weight=None, class_weight=None):
        """x, y and per-sample weights converted and checked against the model (built
        from x's shape if needed) and its loss."""
        x = self._convert_x(x)
        if not self.built:
            self._build(x.shape[1:])
        self._check_loss_fits_model()
        y = self._convert_y(y, x.shape[0])
        return x, y, self._sample_weights(x.shape[0], y, sample_weight, class_weight)

    def _convert_y(self, y, n, name="y"):
        return self.loss.prepare_targets(y, n, self.output_dim, name)

    def _sample_weights(self, n, y, sample_weight, class_weight, name="sample_weight"):
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"{name} must hold numbers, got dtype {w.dtype}")
            w = w.astype(np.float64)
            if w.ndim == 2 and w.shape[1] == 1:
                w = w[:, 0]
            if w.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) (one weight per sample), got "
                                 f"{w.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{name} must be finite and >= 0")
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError("class_weight must be a dict {class index: weight}")
            if y.ndim == 1:
                labels = y.astype(np.int64)
            elif y.shape[1] == 1:
                labels = (y[:, 0] > 0.5).astype(np.int64)
            else:
                labels = y.argmax(axis=1)
            k = max(int(labels.max()) + 1, max(int(c) for c in class_weight) + 1)
            table = np.ones(k, np.float64)
            for c, v in class_weight.items():
                if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
                    raise ValueError(f"class_weight keys must be class indices >= 0, got {c!r}")
                if not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"class_weight[{c}] must be a finite number >= 0, got {v!r}")
                table[int(c)] = float(v)
            cw = table[labels]
            w = cw if w is None else w * cw
        return None if w is None else np.ascontiguousarray(w, np.float32)

    # ------------------------------------------------------------------ compute
    def _forward(self, ctx, x, stages=None):
        h = x
        if stages is None and self._plain:
            for s in self._stages:
                h = s.forward(ctx, h)
            return h
        mask = None
        for s in self._stages if stages is None else stages:
            ctx.seq_mask = mask
            h = s.forward(ctx, h)
            mask = s.mask_out(ctx, mask)
            ctx.tiled = False
        return h

    def _backward(self, ctx, d):
        f = self._first_trainable
        for i in range(len(self._stages) - 1, f - 1, -1):
            d = self._stages[i].backward(ctx, d, i > f)

    def _apply_head(self, z, out=None):
        z2 = z.reshape(z.shape[0], -1)
        if out is None:
            out = np.empty(z2.shape, np.float32)
        if self._head == "softmax":
            _core.softmax(z2, out)
        elif self._head == "sigmoid":
            np.negative(z2, out=out)
            np.exp(out, out=out)
            out += 1.0
            np.reciprocal(out, out=out)
        else:
            out[...] = z2
        return out.reshape(z.shape)

    def _train_step(self, xb, yb, wb, m):
        """One TRAIN forward and backward (gradients in the blocks, regularizer
        gradients added; no update); returns (weighted loss sum, logits)."""
        ctx = Context(TRAIN, m, step=self._step, seed=self.seed)
        logits = self._forward(ctx, xb)
        z = logits.reshape(m, -1)
        grad = self._extra["dlogits"][:m].reshape(m, -1)
        loss_sum = self.loss.forward_backward(z, yb, grad, wb)
        self._backward(ctx, grad.reshape(logits.shape))
        for v in self._reg_vars:
            r = v.regularizer
            _core.regularize_grad(v.grad.reshape(-1), v.value.reshape(-1), r.l1, r.l2)
        return loss_sum, z

    def _update(self, segments):
        store = self._store
        opt = self.optimizer
        if segments is None:          # every weight trains, no per-variable clipping
            opt.apply(store.params, store.grads)
        elif segments:
            opt.apply(store.params, store.grads, segments)
        for v in self._con_vars:
            c = v.constraint
            _core.maxnorm(v.value.reshape(-1, v.shape[-1]), c.max_value)

    def _prepare_training(self):
        store = self._store
        self._reg_vars = [v for v in store.weight_vars
                          if v.regularizer is not None and store.is_trainable(v)]
        self._con_vars = [v for v in store.weight_vars
                          if v.constraint is not None and store.is_trainable(v)]
        self._plan_if_trainable_changed()
        # per-variable segments when some weights are frozen or clipnorm clips each
        # variable by its own norm; None: one update of the whole block
        if store.trainable_segments() == [(0, store.params.size)] and \
                getattr(self.optimizer, "clipnorm", None) is None:
            return None
        return store.variable_segments()

    def _plan_if_trainable_changed(self):
        flags = tuple(l.trainable for l in self.layers)
        if getattr(self, "_trainable_flags", None) != flags:
            self._trainable_flags = flags
            self._plan()

    def _penalty(self):
        return sum(v.regularizer(v.value) for v in self._reg_vars)

    # ---------------------------------------------------------------------- fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None):
        """Train for ``epochs`` epochs; returns a ``History`` whose ``.history`` holds the
        per-epoch ``loss``, metrics and their ``val_`` versions.

        sample_weight (n,) and class_weight {class: weight} weight each sample's loss as
        Keras 3 does (the batch loss is the mean over the batch of weight × loss).
        A NaN/inf loss raises ``NonFiniteLossError`` naming the epoch and step; the weights
        are left at their last finite values.  ``KeyboardInterrupt`` leaves the model at
        its last completed step with ``model.history`` up to date, then propagates.
        """
        with self._lock:
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, class_weight, sample_weight,
                             initial_epoch, steps_per_epoch)

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch,
             steps_per_epoch):
        self._require_compiled("fit", x, y)
        batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
        epochs = _int_arg(epochs, "epochs", minimum=0)
        initial_epoch = _int_arg(initial_epoch, "initial_epoch", minimum=0)
        if not isinstance(validation_split, numbers.Real) or not (0.0 <= validation_split < 1.0):
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        verbose = 1 if verbose == "auto" else verbose
        x, y, w = self._inputs(x, y, sample_weight, class_weight)
        wv = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or "
                                 "(x_val, y_val, sample_weight_val)")
            xv = self._convert_x(validation_data[0], "validation_data x")
            yv = self._convert_y(validation_data[1], xv.shape[0], "validation_data y")
            if len(validation_data) == 3 and validation_data[2] is not None:
                wv = self._sample_weights(xv.shape[0], yv, validation_data[2], None,
                                          "validation_data sample_weight")
        elif validation_split > 0:
            n_val = int(x.shape[0] * validation_split)
            if n_val == 0 or n_val == x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no training or "
                                 f"no validation samples for {x.shape[0]} samples")
            xv, yv = x[-n_val:], y[-n_val:]
            x, y = x[:-n_val], y[:-n_val]
            if w is not None:
                wv, w = w[-n_val:], w[:-n_val]
        else:
            xv = yv = None
        n = x.shape[0]
        bs = min(batch_size, n)
        steps = (n + bs - 1) // bs
        if steps_per_epoch is not None:
            steps = min(steps, _int_arg(steps_per_epoch, "steps_per_epoch"))
        segments = self._prepare_training()
        self.optimizer.build(self._store.params.size)
        self._ensure(x.shape[1:], bs)
        xbuf = np.empty((bs,) + x.shape[1:], np.float32)
        ybuf = np.empty((bs,) + y.shape[1:], y.dtype)
        wbuf = None if w is None else np.empty(bs, np.float32)
        metric_fns = self._metric_fns()

        history = _callbacks.History()
        cbs = list(callbacks or [])
        for cb in cbs:
            if not isinstance(cb, _callbacks.Callback):
                raise TypeError(f"callbacks must be fastdrop.callbacks.Callback objects, got "
                                f"{type(cb).__name__}")
        cbs.append(history)
        for cb in cbs:
            cb.set_model(self)
        history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        self.history = history
        self.stop_training = False
        bar = _callbacks.ProgressBar(verbose)
        for cb in cbs:
            cb.on_train_begin()
        has_penalty = bool(self._reg_vars)
        store = self._store
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            bar.epoch_begin(epoch, epochs, steps)
            # keyed by the global step: resuming from a saved model shuffles exactly as an
            # uninterrupted run would
            order = np.random.default_rng(_random.derive(
                self.seed, _random.KEY_SHUFFLE, self._step)).permutation(n) if shuffle else None
            snapshot = (store.params.copy(), store.state.copy(), self.optimizer.state().copy(),
                        self.optimizer.iterations, self._step)
            loss_total = 0.0
            sums = [0.0] * len(metric_fns)
            counts = [0] * len(metric_fns)
            seen = 0
            logs = {}
            for b in range(steps):
                for cb in cbs:
                    cb.on_train_batch_begin(b)
                lo, hi = b * bs, min((b + 1) * bs, n)
                m = hi - lo
                wb = None
                if order is not None:
                    idx = order[lo:hi]
                    xb = np.take(x, idx, axis=0, out=xbuf[:m])
                    yb = np.take(y, idx, axis=0, out=ybuf[:m])
                    if w is not None:
                        wb = np.take(w, idx, out=wbuf[:m])
                else:
                    xb, yb = x[lo:hi], y[lo:hi]
                    if w is not None:
                        wb = w[lo:hi]
                loss_sum, z = self._train_step(xb, yb, wb, m)
                batch_loss = loss_sum / m
                if has_penalty:
                    batch_loss += self._penalty()
                if not math.isfinite(batch_loss):
                    self._restore_if_nonfinite(snapshot)
                    raise NonFiniteLossError(
                        f"non-finite loss ({batch_loss}) at epoch {epoch + 1}, step {b + 1}: "
                        f"training stopped; the weights keep their last finite values "
                        f"(try a lower learning rate)")
                for k, (_, f) in enumerate(metric_fns):
                    s_, c_ = f(None, z, yb)
                    sums[k] += s_
                    counts[k] += c_
                # one fused update of the trainable block: a KeyboardInterrupt lands before
                # or after a step, never inside it
                self._update(segments)
                self._step += 1
                loss_total += batch_loss * m
                seen += m
                logs = {"loss": loss_total / seen}
                for k, (name, _) in enumerate(metric_fns):
                    logs[name] = sums[k] / max(counts[k], 1)
                bar.update(b + 1, seen, logs)
                for cb in cbs:
                    cb.on_train_batch_end(b, logs)
                if self.stop_training:
                    break
            if xv is not None:
                vals = self._evaluate_arrays(xv, yv, wv, max(bs, 256), metric_fns)
                logs["val_loss"] = vals["loss"]
                for name, _ in metric_fns:
                    logs["val_" + name] = vals[name]
            bar.epoch_end(steps, seen, logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _restore_if_nonfinite(self, snapshot):
        """Keep the current weights if finite, else go back to the epoch-start snapshot."""
        store = self._store
        if not (np.isfinite(store.params).all() and np.isfinite(store.state).all()):
            params, state, opt_state, iters, step = snapshot
            store.params[...] = params
            store.state[...] = state
            self.optimizer.set_state(opt_state, iters)
            self._step = step

    # ------------------------------------------------------------ evaluate/predict
    def _evaluate_arrays(self, x, y, w, batch_size, metric_fns):
        n = x.shape[0]
        bs = min(batch_size, n)
        self._ensure(x.shape[1:], bs)
        total = 0.0
        sums = [0.0] * len(metric_fns)
        counts = [0] * len(metric_fns)
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            m = hi - lo
            out = self._forward(Context(INFER, m), x[lo:hi])
            z = out.reshape(m, -1)
            total += self.loss.sum_loss(z, y[lo:hi], None if w is None else w[lo:hi])
            for k, (_, f) in enumerate(metric_fns):
                s_, c_ = f(None, z, y[lo:hi])
                sums[k] += s_
                counts[k] += c_
        store = self._store
        reg = [v for v in store.weight_vars if v.regularizer is not None]
        loss = total / n + sum(v.regularizer(v.value) for v in reg)
        res = {"loss": loss}
        for k, (name, _) in enumerate(metric_fns):
            res[name] = sums[k] / max(counts[k], 1)
        return res

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 return_dict=False):
        """Loss (and metrics when compiled with them) on (x, y), in inference mode.
        Returns ``loss`` or ``[loss, *metrics]`` as Keras does (a dict with
        ``return_dict=True``).  batch_size: rows per forward pass (default 32; the result
        does not depend on it)."""
        with self._lock:
            self._require_compiled("evaluate", x, y)
            batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
            if verbose not in (0, 1, 2, "auto"):
                raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
            x, y, w = self._inputs(x, y, sample_weight)
            t0 = time.perf_counter()
            res = self._evaluate_arrays(x, y, w, batch_size, self._metric_fns())
            if verbose and verbose != "auto":
                dt = time.perf_counter() - t0
                extra = "".join(f" - {k}: {v:.4f}" for k, v in res.items() if k != "loss")
                print(f"{x.shape[0]} samples - {dt:.2f}s - loss: {res['loss']:.4f}{extra}")
            if return_dict:
                return res
            vals = list(res.values())
            return vals if len(vals) > 1 else vals[0]

    def predict(self, x, batch_size=None, verbose=0, mc_samples=None, seed=None):
        """Outputs for x in inference mode (dropout off), float32 (n, *output shape):
        what the last layer outputs (class probabilities after a final softmax).

        Monte Carlo dropout: with ``mc_samples=T`` the model runs T stochastic passes
        with noise on (everything else in inference mode, BatchNorm on its moving
        statistics) and returns ``(mean, std)`` of the outputs over the passes.  ``seed``
        makes the passes reproducible (default: fresh randomness); the result does not
        depend on ``batch_size`` or on the other samples in x.  See
        ``fastdrop.uncertainty`` for predictive entropy and mutual information.
        """
        if (mc_samples is None and batch_size is None and type(x) is np.ndarray
                and x.dtype == np.float32 and x.flags.c_contiguous and self.built
                and 0 < x.shape[0] <= self._capacity and x.shape[1:] == self._bound):
            # fast path for small ready-made inputs (batch-1 inference latency)
            with self._lock:
                if x.shape[1:] == self._bound and x.shape[0] <= self._capacity:
                    ctx = self._infer_ctx
                    ctx.m = ctx.samples = x.shape[0]
                    h = self._forward(ctx, x)
                    if self._head == "softmax" and h.ndim == 2:
                        out = np.empty(h.shape, np.float32)
                        _core.softmax(h, out)
                        return out
                    return self._apply_head(h)
        with self._lock:
            if mc_samples is not None:
                from .uncertainty import _mc_moments
                mean, m2, _ = _mc_moments(self, x, mc_samples, seed, batch_size)
                return mean, np.sqrt(m2)
            return self._predict(x, batch_size)

    def _prepare_predict(self, x, batch_size):
        x = self._convert_x(x, check_finite=False, allow_empty=True)
        if not self.built:
            self._build(x.shape[1:])
        if batch_size is not None:
            batch_size = _int_arg(batch_size, "batch_size")
        # predict does not scan for NaN/inf (they propagate to the outputs, as in Keras
        # and PyTorch); fit and evaluate reject them
        return x, batch_size

    def _predict(self, x, batch_size):
        x, batch_size = self._prepare_predict(x, batch_size)
        n = x.shape[0]
        if n == 0:
            s = x.shape[1:]
            for st in self._stages:
                s = st.infer_shape(s)
            return np.empty((0,) + tuple(s), np.float32)
        bs = min(batch_size or 1024, n)
        self._ensure(x.shape[1:], bs)
        out = np.empty((n,) + self._bound_out, np.float32)
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            h = self._forward(Context(INFER, hi - lo), x[lo:hi])
            self._apply_head(h, out[lo:hi].reshape(hi - lo, -1))
        return out

    def predict_on_batch(self, x):
        """``predict`` of one batch (as Keras)."""
        return self.predict(x, batch_size=max(1, len(x)) if hasattr(x, "__len__") else None)

    def __call__(self, x, training=False):
        """``model(x)`` equals ``predict(x)``; ``model(x, training=True)`` is one
        stochastic training-mode forward pass (dropout on, batch statistics) without any
        update, as in Keras."""
        if not training:
            return self.predict(x)
        with self._lock:
            x = self._convert_x(x, check_finite=False)
            if not self.built:
                self._build(x.shape[1:])
            m = x.shape[0]
            self._ensure(x.shape[1:], m)
            state = self._store.state.copy()
            try:
                h = self._forward(Context(TRAIN, m, step=self._step, seed=self.seed), x)
                return self._apply_head(h)
            finally:
                self._store.state[...] = state   # no update of moving statistics

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch; returns the loss (and metrics) of that batch
        before the update, as Keras."""
        with self._lock:
            self._require_compiled("train_on_batch", x, y)
            x, y, w = self._inputs(x, y, sample_weight, class_weight)
            m = x.shape[0]
            segments = self._prepare_training()
            self.optimizer.build(self._store.params.size)
            self._ensure(x.shape[1:], m)
            metric_fns = self._metric_fns()
            snapshot = (self._store.params.copy(), self._store.state.copy(),
                        self.optimizer.state().copy(), self.optimizer.iterations, self._step)
            loss_sum, z = self._train_step(x, y, w, m)
            loss = loss_sum / m + (self._penalty() if self._reg_vars else 0.0)
            if not math.isfinite(loss):
                self._restore_if_nonfinite(snapshot)
                raise NonFiniteLossError(f"non-finite loss ({loss}) in train_on_batch")
            res = {"loss": loss}
            for name, f in metric_fns:
                s_, c_ = f(None, z, y)
                res[name] = s_ / max(c_, 1)
            self._update(segments)
            self._step += 1
            return res if return_dict else (list(res.values()) if len(res) > 1 else loss)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """``evaluate`` of one batch."""
        return self.evaluate(x, y, batch_size=max(1, len(x)), verbose=0,
                             sample_weight=sample_weight, return_dict=return_dict)

    def loss_and_gradients(self, x, y, step=None, sample_weight=None):
        """One training-mode forward and backward pass without any update — the
        supported hook for gradient checks and introspection.

        step: the training step whose noise to draw (default: the next step's).  Returns
        a dict: ``loss`` (mean weighted loss plus penalties, as ``fit`` reports it),
        ``gradients`` (arrays in ``get_weights()`` order; None for state variables) and
        ``masks`` ({name: bool keep array of shape (n, *shape)} for the noise drawn:
        dropout layers by their name, DropConnect as '<dense>/kernel')."""
        with self._lock:
            self._require_compiled("loss_and_gradients", x, y)
            x, y, w = self._inputs(x, y, sample_weight)
            m = x.shape[0]
            self._prepare_training()
            self._ensure(x.shape[1:], m)
            saved_step = self._step
            if step is not None:
                self._step = _int_arg(step, "step", minimum=0)
            state = self._store.state.copy()
            try:
                loss_sum, _ = self._train_step(x, y, w, m)
            finally:
                self._step = saved_step
                self._store.state[...] = state
            loss = loss_sum / m + (self._penalty() if self._reg_vars else 0.0)
            masks = {}
            for s in self._stages:
                masks.update(s.noise_masks(m))
            grads = [None if v.grad is None else np.array(v.grad) for v in self._store.vars]
            return {"loss": loss, "gradients": grads, "masks": masks}

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
        from . import layers as L
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("config must be a dict with a 'layers' list (from get_config())")
        model = cls(seed=config.get("seed"), name=config.get("name"))
        for spec in config["layers"]:
            cls_ = L.LAYER_TYPES.get(spec.get("class_name")) if isinstance(spec, dict) else None
            if cls_ is None:
                raise ValueError(f"unknown layer type in config: {spec!r:.80}")
            model.add(cls_.from_config(dict(spec["config"])))
        return model

    # ------------------------------------------------------------------- saving
    def save(self, filepath):
        """Save config, weights, state, optimizer state and step counter to ``filepath``
        atomically (temporary file + rename).  No pickle is used."""
        from .io.saving import save_model
        with self._lock:
            save_model(self, filepath)

    def save_weights(self, filepath):
        """Save the weights (and state variables) only, atomically, in fastdrop's own
        format; ``load_weights`` reads them into a model of the same architecture."""
        from .io.saving import save_weights
        with self._lock:
            save_weights(self, filepath)

    def load_weights(self, filepath):
        from .io.saving import load_weights
        with self._lock:
            load_weights(self, filepath)

    def __getstate__(self):
        from .io.saving import model_to_bytes
        with self._lock:
            return {"fastdrop_model": model_to_bytes(self)}

    def __setstate__(self, state):
        from .io.saving import model_from_bytes
        other = model_from_bytes(state["fastdrop_model"])
        self.__dict__.update(other.__dict__)

    def __deepcopy__(self, memo):
        import copy  # noqa: F401
        from .io.saving import model_from_bytes, model_to_bytes
        with self._lock:
            return model_from_bytes(model_to_bytes(self))

    def __repr__(self):
        return f"<Sequential {self.name!r} layers={[l.name for l in self.layers]}>"


def load_model(filepath):
    """Load a model saved by ``Sequential.save`` (ValueError on a corrupt, truncated or
    foreign file; never unpickles).  Files of the previous format load too."""
    from .io.saving import load_model as _load
    return _load(filepath)

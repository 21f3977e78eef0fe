"""The loops: ``compile``, ``fit``, ``evaluate``, ``predict`` (plain and Monte Carlo
dropout), the ``*_on_batch`` calls and ``loss_and_gradients``.

A mixin of ``Sequential`` (as Keras 3's ``Trainer`` is of ``Model``): the model owns the
layers, plan, stages and variables; the trainer runs batches through them.  One training
step: forward through the stages in TRAIN mode, the fused loss head on the logits,
backward stage by stage into the gradient block, one fused optimizer update.  MC dropout
is the MC mode of the same forward pass.
"""
import math
import numbers
import time

import numpy as np

from .. import _core
from .. import callbacks as _callbacks
from .. import losses as _losses
from .. import optimizers as _optimizers
from .. import random as _random
from ..engine import INFER, TRAIN, Context
from . import _distribution as _dp_state
from ._args import _int_arg
from .inputs import Inputs


class NonFiniteLossError(FloatingPointError):
    """Raised by ``fit`` when the loss becomes NaN or infinite."""


_ACCURACY = ("accuracy", "acc")
_METRICS = _ACCURACY + ("categorical_accuracy", "sparse_categorical_accuracy",
                        "binary_accuracy", "mae", "mean_absolute_error", "mse",
                        "mean_squared_error")



class Trainer(Inputs):
    """Mixin of ``Sequential``: the training, evaluation and prediction loops."""

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

    # ------------------------------------------------------------------ compute
    def _forward(self, ctx, x, stages=None, mask=None, want_mask=False):
        """Run ``stages`` (default: all) on x.  ``mask``: the sequence mask entering the
        first stage; ``want_mask``: return (output, the sequence mask after the last
        stage) — the MC loop carries a prefix's mask into the tiled passes."""
        h = x
        if stages is None and self._plain and mask is None:
            for s in self._stages:
                h = s.forward(ctx, h)
            return (h, None) if want_mask else h
        for s in self._stages if stages is None else stages:
            ctx.seq_mask = mask
            h = s.forward(ctx, h)
            mask = s.mask_out(ctx, mask)
            ctx.tiled = False
        return (h, mask) if want_mask else h

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

    def _train_step(self, xb, yb, wb, m, offset=0):
        """One TRAIN forward and backward (gradients in the blocks, regularizer
        gradients added; no update); returns (weighted loss sum, logits).  offset: row of
        xb[0] in the global batch (a rank's share in fastdrop.distributed)."""
        ctx = Context(TRAIN, m, step=self._step, seed=self.seed, offset=offset)
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
        dp = _dp_state.active()
        if dp is not None:    # fastdrop.distributed: agree, broadcast rank 0's weights
            metric_fns, cbs, verbose = dp.begin_fit(self, n, bs, steps, metric_fns, cbs,
                                                    verbose)
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
                off = 0
                if dp is not None:   # this rank's contiguous share of the global batch
                    off, lo, hi = dp.share(lo, hi)
                mr = hi - lo
                wb = None
                if order is not None:
                    idx = order[lo:hi]
                    xb = np.take(x, idx, axis=0, out=xbuf[:mr])
                    yb = np.take(y, idx, axis=0, out=ybuf[:mr])
                    if w is not None:
                        wb = np.take(w, idx, out=wbuf[:mr])
                else:
                    xb, yb = x[lo:hi], y[lo:hi]
                    if w is not None:
                        wb = w[lo:hi]
                if dp is None:
                    loss_sum, z = self._train_step(xb, yb, wb, m)
                else:                # gradients and loss summed over ranks, fixed order
                    loss_sum, z = dp.train_step(self, xb, yb, wb, mr, off, m)
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
        dp = _dp_state.active()
        if dp is not None:           # each rank its shard, sums combined over ranks
            return dp.evaluate_arrays(self, x, y, w, batch_size, metric_fns)
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
            dp = _dp_state.active()
            if dp is not None:       # each rank its shard of the samples, then gathered
                return dp.predict(self, x, batch_size, mc_samples, seed)
            if mc_samples is not None:
                from .mc import _mc_moments
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


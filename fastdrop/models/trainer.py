"""The loops: ``compile``, ``fit``, ``evaluate``, ``predict`` (plain and Monte Carlo
dropout), the ``*_on_batch`` calls and ``loss_and_gradients``.

A mixin of ``Sequential`` (as Keras 3's ``Trainer`` is of ``Model``): the model owns the
layers, plan, stages and variables; the trainer runs batches through them.  One training
step: forward through the stages in TRAIN mode, the fused loss head on the logits,
backward stage by stage into the gradient block, one fused optimizer update.  MC dropout
is the MC mode of the same forward pass.
"""
import itertools
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
from . import data_adapters as _adapters
from . import _distribution as _dp_state
from ._args import _int_arg
from .heads import _ACCURACY, Heads
from .inputs import Inputs


# A step whose gradients reach this magnitude is refused with the non-finite ones: the
# squared-gradient slots (Adam, RMSprop, Adagrad, ...) would overflow float32 (its largest
# value is 3.4e38 = (1.8e19)^2) and turn the next update into NaN.
_GRAD_BOUND = 1e19


class NonFiniteLossError(FloatingPointError):
    """Raised by ``fit`` when the loss becomes NaN or infinite."""


_VAL_RAN_OUT = ("validation_data ran out of data: no val_ metrics this epoch. A Python "
                "generator is read once: make it endless and give validation_steps, or use "
                "a PyDataset or DataLoader")


_METRICS = _ACCURACY + ("categorical_accuracy", "sparse_categorical_accuracy",
                        "binary_accuracy", "mae", "mean_absolute_error", "mse",
                        "mean_squared_error")



class Trainer(Heads, Inputs):
    """Mixin of ``Sequential``: the training, evaluation and prediction loops."""

    # ----------------------------------------------------------------- compiling
    def compile(self, optimizer="adam", loss=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """Configure training.  optimizer: a name ('adam', 'sgd', 'adamw', ...) or an
        Optimizer; loss: a name ('sparse_categorical_crossentropy' for integer labels,
        'categorical_crossentropy' for one-hot targets, 'binary_crossentropy', 'mse', ...)
        or a Loss; metrics: e.g. ['accuracy'] (resolved from the shapes of the targets and
        the output, as Keras 3 does; logged under the name given).  As in Keras,
        ``metrics`` ignore sample_weight/class_weight (an output mask still applies);
        ``weighted_metrics`` are weighted by them."""
        if kwargs:
            raise TypeError(f"compile got unexpected arguments {sorted(kwargs)}")
        if loss is None:
            raise ValueError("loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = _optimizers.get(optimizer)
        self.loss = _losses.get(loss)
        def names(ms, arg):
            if isinstance(ms, str):
                ms = [ms]
            ms = list(ms or [])
            for m in ms:
                if m not in _METRICS:
                    raise ValueError(f"{arg} may contain {list(_METRICS)}, got {m!r}")
            return ms
        self.metrics = names(metrics, "metrics")
        self.weighted_metrics = names(weighted_metrics, "weighted_metrics")
        self.compiled = True
        if self.built:
            self._plan()
            self.optimizer.build(self._store.params.size)

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

    def _train_step(self, xb, yb, wb, m, offset=0, counts=None):
        """One TRAIN forward and backward (gradients in the blocks, regularizer
        gradients added; no update); returns (weighted loss sum over the batch's samples,
        loss rows z, target rows, metric row weights).  offset: row of xb[0] in the global
        batch (a rank's share in fastdrop.distributed); counts: the loss mask's
        (valid, total) over the global batch (``_row_weights``)."""
        ctx = Context(TRAIN, m, step=self._step, seed=self.seed, offset=offset)
        logits, mask = self._forward(ctx, xb, want_mask=True)
        z, yr = self._loss_rows(logits, yb, m)
        grad = self._extra["dlogits"][:m].reshape(z.shape)
        wl, wm = self._row_weights(wb, mask, m, counts)
        loss_sum = self.loss.forward_backward(z, yr, grad, wl)
        R = z.shape[0] // m
        if R != 1:          # the loss is the mean over the m*R rows: per sample, / R
            loss_sum /= R
        self._backward(ctx, grad.reshape(logits.shape))
        for v in self._reg_vars:
            r = v.regularizer
            _core.regularize_grad(v.grad.reshape(-1), v.value.reshape(-1), r.l1, r.l2)
        return loss_sum, z, yr, wm

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
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None):
        """Train for ``epochs`` epochs; returns a ``History`` whose ``.history`` holds the
        per-epoch ``loss``, metrics and their ``val_`` versions.

        x may also be a Python generator, a ``PyDataset``-style sequence or a torch
        ``DataLoader`` of ``(x, y)`` / ``(x, y, sample_weight)`` batches (y and
        sample_weight then not given), as ``validation_data`` may; ``steps_per_epoch`` and
        ``validation_steps`` bound their epochs as in Keras (``fastdrop.models.data_adapters``).

        sample_weight (n,) and class_weight {class: weight} weight each sample's loss as
        Keras 3 does (the batch loss is the mean over the batch of weight × loss).
        A NaN/inf loss raises ``NonFiniteLossError`` naming the epoch and step; the weights
        are left at their last finite values.  ``KeyboardInterrupt`` leaves the model at
        its last completed step with ``model.history`` up to date, then propagates.
        """
        with self._lock:
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, class_weight, sample_weight,
                             initial_epoch, steps_per_epoch, validation_steps)

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch,
             steps_per_epoch, validation_steps=None):
        # a generator, PyDataset or DataLoader (data_adapters): its first batch goes through
        # the array checks below; the loop reads every batch from `opened`, then `ep`
        if _adapters.is_source(x):
            self._require_compiled("fit", x, True)
        src = _adapters.adapter(x, y, sample_weight, shuffle, "fit")
        ep = opened = batches = None
        if src is not None:
            if validation_split:
                raise ValueError(f"validation_split is only supported for arrays, not a "
                                 f"{src.kind}: give validation_data")
            ep, opened, (x, y, sample_weight) = _adapters.open_source(
                self, src, steps_per_epoch, "fit", step_key=self._step)
            shuffle, steps_per_epoch = False, None
        vsrc = _adapters.adapter(validation_data, what="fit", arg="validation_data")
        vep = None
        if vsrc is not None:
            vep = _adapters.EpochIterator(vsrc, validation_steps, self.seed, "validation_steps")
            validation_data, validation_split = None, 0.0
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
        y_shape = self._y_shape
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
        if xv is not None and validation_steps is not None:
            xv, yv, wv = _adapters.array_steps((xv, yv, wv), validation_steps, batch_size,
                                               "validation_steps")
        n = x.shape[0]
        bs = min(batch_size, n)
        steps = (n + bs - 1) // bs
        if steps_per_epoch is not None:
            steps = min(steps, _int_arg(steps_per_epoch, "steps_per_epoch"))
        if ep is not None:
            steps = ep.num_batches      # None: unknown until the source runs out
        segments = self._prepare_training()
        self.optimizer.build(self._store.params.size)
        self._ensure(x.shape[1:], bs)
        xbuf = np.empty((bs,) + x.shape[1:], np.float32)
        ybuf = np.empty((bs,) + y.shape[1:], y.dtype)
        wbuf = None if w is None else np.empty((bs,) + w.shape[1:], np.float32)
        metric_fns = self._metric_fns(y_shape)

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
        for epoch in range(initial_epoch, epochs):
            if ep is not None:
                raw = opened if opened is not None else ep.epoch(self._step)
                opened = None
                if raw is None:         # a Python generator that has run out (warned)
                    break
                batches = _adapters.Batches(self, raw, src.kind, True, class_weight)
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            bar.epoch_begin(epoch, epochs, steps)
            # keyed by the global step: resuming from a saved model shuffles exactly as an
            # uninterrupted run would
            order = np.random.default_rng(_random.derive(
                self.seed, _random.KEY_SHUFFLE, self._step)).permutation(n) if shuffle else None
            loss_total = 0.0
            sums = [0.0] * len(metric_fns)
            counts = [0] * len(metric_fns)
            seen = 0
            logs = {}
            for b in range(steps) if batches is None else itertools.count():
                if batches is not None:
                    batch = next(batches, None)
                    if batch is None:
                        break
                for cb in cbs:
                    cb.on_train_batch_begin(b)
                lo, hi = b * bs, min((b + 1) * bs, n)
                m = hi - lo
                off = 0
                wb = None
                if batches is not None:
                    xb, yb, wb = batch
                    m = mr = xb.shape[0]
                    if dp is not None:   # this rank's contiguous share of the source's batch
                        off, a, c = dp.share(0, m)
                        xb, yb = xb[a:c], yb[a:c]
                        wb = None if wb is None else wb[a:c]
                        mr = c - a
                else:
                    if dp is not None:   # this rank's contiguous share of the global batch
                        off, lo, hi = dp.share(lo, hi)
                    mr = hi - lo
                    if order is not None:
                        idx = order[lo:hi]
                        xb = np.take(x, idx, axis=0, out=xbuf[:mr])
                        yb = np.take(y, idx, axis=0, out=ybuf[:mr])
                        if w is not None:
                            wb = np.take(w, idx, axis=0, out=wbuf[:mr])
                    else:
                        xb, yb = x[lo:hi], y[lo:hi]
                        if w is not None:
                            wb = w[lo:hi]
                batch_loss, z, yr, wm = self._guarded_step(
                    xb, yb, wb, m, segments, has_penalty, f"at epoch {epoch + 1}, step {b + 1}",
                    dp, mr, off)
                for k, (_, f, weighted) in enumerate(metric_fns):
                    s_, c_ = f(z, yr, wm[weighted])
                    sums[k] += s_
                    counts[k] += c_
                loss_total += batch_loss * m
                seen += m
                logs = {"loss": loss_total / seen}
                for k, (name, _, _) in enumerate(metric_fns):
                    logs[name] = sums[k] / counts[k] if counts[k] else 0.0
                bar.update(b + 1, seen, logs)
                for cb in cbs:
                    cb.on_train_batch_end(b, logs)
                if self.stop_training:
                    break
            if batches is not None:
                batches.close()         # the source's on_epoch_end (also after a stop)
            # an update with finite gradients can still overflow a weight (a huge learning
            # rate): one check per epoch, so fit never returns such weights unannounced
            self._check_weights_finite(f"after epoch {epoch + 1}")
            vb = None if vep is None else vep.epoch(ran_out=_VAL_RAN_OUT)
            if xv is not None or vb is not None:
                vals = self._evaluate_arrays(
                    xv, yv, wv, max(bs, 256), metric_fns,
                    batches=None if vb is None else _adapters.Batches(self, vb, vsrc.kind, True))
                logs["val_loss"] = vals["loss"]
                for name, _, _ in metric_fns:
                    logs["val_" + name] = vals[name]
            bar.epoch_end(steps if ep is None else ep.steps_done, seen, logs)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        if opened is not None:          # no epoch ran (initial_epoch >= epochs)
            opened.close()
        for a in (src, vsrc):
            if a is not None:
                a.close()
        return history

    def _guarded_step(self, xb, yb, wb, m, segments, has_penalty, where, dp=None, mr=None,
                      off=0):
        """A training step that is applied only when its loss and gradients are finite:
        else every weight, optimizer slot and moving statistic stays as before it and
        ``NonFiniteLossError`` says so.  Returns (batch loss, loss rows, target rows,
        metric row weights).  dp: the DataParallel in force; then xb holds this rank's
        ``mr`` rows (rows ``off..`` of the global batch of m), and the loss, gradients and
        moving statistics checked are the ones combined over the ranks (every rank takes
        the same decision)."""
        store = self._store
        # the moving statistics move during the forward pass: keep them (a few floats)
        state0 = store.state.copy() if store.state.size else None
        if dp is None:
            loss_sum, z, yr, wm = self._train_step(xb, yb, wb, m)
        else:               # gradients and loss summed over the ranks, in a fixed order
            loss_sum, z, yr, wm = dp.train_step(self, xb, yb, wb, mr, off, m)
        batch_loss = loss_sum / m
        if has_penalty:
            batch_loss += self._penalty()
        bad = None
        if not math.isfinite(batch_loss):
            bad = f"non-finite loss ({batch_loss})"
        elif not self._grads_finite(segments):
            bad = (f"non-finite gradients, or gradients of magnitude >= {_GRAD_BOUND:.0e} "
                   f"(float32 cannot hold their squares) (loss {batch_loss:.6g})")
        elif state0 is not None and not _core.all_finite(store.state):
            bad = f"non-finite moving statistics (loss {batch_loss:.6g})"
        if bad is not None:
            if state0 is not None:
                store.state[...] = state0
            raise NonFiniteLossError(self._nonfinite_message(bad, where))
        # one fused update of the trainable block: a KeyboardInterrupt lands before
        # or after a step, never inside it
        self._update(segments)
        self._step += 1
        return batch_loss, z, yr, wm

    def _grads_finite(self, segments):
        """Every trainable gradient finite and below _GRAD_BOUND (one pass, fused with
        nothing else: about a fifth of an Adam update's memory traffic)."""
        g = self._store.grads
        if segments is None:
            return _core.all_below(g, _GRAD_BOUND)
        return all(_core.all_below(g[lo:hi], _GRAD_BOUND) for lo, hi in segments)

    def _nonfinite_layers(self):
        bad = []
        for v in self._store.vars:
            if not np.isfinite(v.value).all():
                name = v.layer.name if v.layer is not None else "?"
                if name not in bad:
                    bad.append(name)
        return bad

    def _nonfinite_message(self, what, where):
        layers = self._nonfinite_layers()
        if layers:
            return (f"{what} {where}: training stopped; the step was not applied, but the "
                    f"weights were already not finite in layer(s) {', '.join(layers)} (an "
                    f"earlier update overflowed them: lower the learning rate and restore "
                    f"the weights from a checkpoint)")
        return (f"{what} {where}: training stopped; the step was not applied: every "
                f"weight, optimizer slot and moving statistic is as before it (try a lower "
                f"learning rate, scaled inputs, or clipnorm)")

    def _check_weights_finite(self, where):
        """Weights, moving statistics and optimizer slots all finite, else
        ``NonFiniteLossError`` naming what is not (one pass; once per epoch)."""
        store = self._store
        slots = self.optimizer.state() if self.optimizer is not None else None
        if _core.all_finite(store.params) and \
                (not store.state.size or _core.all_finite(store.state)) and \
                (slots is None or not slots.size or _core.all_finite(slots.reshape(-1))):
            return
        layers = self._nonfinite_layers()
        if layers:
            raise NonFiniteLossError(
                f"the weights are not finite {where}, in layer(s) {', '.join(layers)}: an "
                f"update overflowed them although the loss and gradients of its step were "
                f"finite (lower the learning rate; restore the weights from a checkpoint)")
        raise NonFiniteLossError(
            f"the optimizer's slots are not finite {where} (the weights are finite): a "
            f"gradient was too large for float32 arithmetic in the update, and the next "
            f"update would make the weights NaN (lower the learning rate, scale the inputs, "
            f"or set clipnorm/clipvalue; then compile again to reset the optimizer)")

    # ------------------------------------------------------------ evaluate/predict
    def _evaluate_arrays(self, x, y, w, batch_size, metric_fns, batches=None):
        """Loss and metrics over x, y, w in batches of batch_size rows, or over
        ``batches`` of converted (x, y, w) (a generator's, PyDataset's or DataLoader's:
        ``data_adapters.Batches``)."""
        if batches is None:
            n = x.shape[0]
            bs = min(batch_size, n)
            self._ensure(x.shape[1:], bs)
            batches = ((x[lo:lo + bs], y[lo:lo + bs], None if w is None else w[lo:lo + bs])
                       for lo in range(0, n, bs))
        dp = _dp_state.active()
        cnt = dp.mask_counts(self) if dp is not None else None
        n = 0
        total = 0.0
        sums = [0.0] * len(metric_fns)
        counts = [0] * len(metric_fns)
        for xb, yb, wb in batches:
            m = xb.shape[0]
            n += m
            if dp is not None:      # this rank's share of the batch; sums combined below
                _, a, c = dp.share(0, m)
                xb, yb, wb = xb[a:c], yb[a:c], None if wb is None else wb[a:c]
                m = c - a
                if m == 0:
                    if cnt is not None:
                        cnt(0, 0)
                    continue
            out, mask = self._forward(Context(INFER, m), xb, want_mask=True)
            z, yr = self._loss_rows(out, yb, m)
            wl, wm = self._row_weights(wb, mask, m, cnt)
            total += self.loss.sum_loss(z, yr, wl) / (z.shape[0] // m)
            for k, (_, f, weighted) in enumerate(metric_fns):
                s_, c_ = f(z, yr, wm[weighted])
                sums[k] += s_
                counts[k] += c_
        if dp is not None:
            total, sums, counts = dp.combine_sums(total, sums, counts)
        if n == 0:
            raise ValueError("no batches to evaluate")
        store = self._store
        reg = [v for v in store.weight_vars if v.regularizer is not None]
        loss = total / n + sum(v.regularizer(v.value) for v in reg)
        res = {"loss": loss}
        for k, (name, _, _) in enumerate(metric_fns):
            res[name] = sums[k] / counts[k] if counts[k] else 0.0
        return res

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 return_dict=False, steps=None):
        """Loss (and metrics when compiled with them) on (x, y), in inference mode.
        Returns ``loss`` or ``[loss, *metrics]`` as Keras does (a dict with
        ``return_dict=True``).  batch_size: rows per forward pass (default 32; the result
        does not depend on it).  x may be a generator, ``PyDataset`` or torch
        ``DataLoader`` of (x, y[, sample_weight]) batches; steps: evaluate that many
        batches only (as Keras)."""
        with self._lock:
            if _adapters.is_source(x):
                self._require_compiled("evaluate", x, True)
            src = _adapters.adapter(x, y, sample_weight, what="evaluate")
            batches = None
            if src is not None:
                _, raw, (x, y, sample_weight) = _adapters.open_source(self, src, steps,
                                                                      "evaluate", "steps")
            self._require_compiled("evaluate", x, y)
            batch_size = 32 if batch_size is None else _int_arg(batch_size, "batch_size")
            if verbose not in (0, 1, 2, "auto"):
                raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
            x, y, w = self._inputs(x, y, sample_weight)
            if src is not None:
                batches = _adapters.Batches(self, raw, src.kind, True)
            else:
                x, y, w = _adapters.array_steps((x, y, w), steps, batch_size)
            t0 = time.perf_counter()
            res = self._evaluate_arrays(x, y, w, batch_size, self._metric_fns(self._y_shape),
                                        batches=batches)
            if src is not None:
                src.close()
            if verbose and verbose != "auto":
                dt = time.perf_counter() - t0
                extra = "".join(f" - {k}: {v:.4f}" for k, v in res.items() if k != "loss")
                n = x.shape[0] if batches is None else batches.samples
                print(f"{n} samples - {dt:.2f}s - loss: {res['loss']:.4f}{extra}")
            if return_dict:
                return res
            vals = list(res.values())
            return vals if len(vals) > 1 else vals[0]

    def predict(self, x, batch_size=None, verbose=0, mc_samples=None, seed=None, steps=None):
        """Outputs for x in inference mode (dropout off), float32 (n, *output shape):
        what the last layer outputs (class probabilities after a final softmax).

        Monte Carlo dropout: with ``mc_samples=T`` the model runs T stochastic passes
        with noise on (everything else in inference mode, BatchNorm on its moving
        statistics) and returns ``(mean, std)`` of the outputs over the passes.  ``seed``
        makes the passes reproducible (default: fresh randomness); the result does not
        depend on ``batch_size`` or on the other samples in x.  See
        ``fastdrop.uncertainty`` for predictive entropy and mutual information.

        x may be a generator, ``PyDataset`` or torch ``DataLoader`` of ``x`` / ``(x, ...)``
        batches (outputs concatenated; MC keys each sample by its running index, so the
        result equals that of the concatenated arrays); steps: that many batches only.
        """
        if (mc_samples is None and batch_size is None and type(x) is np.ndarray
                and x.dtype == np.float32 and x.flags.c_contiguous and self.built
                and self._x_cast is None
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
                    return self._apply_head(h)   # on the last axis for N-D outputs
        with self._lock:
            if steps is not None and not _adapters.is_source(x):
                x = _adapters.array_steps((np.asarray(x),), steps, batch_size or 32)[0]
            dp = _dp_state.active()
            if dp is not None and not _adapters.is_source(x):
                # each rank its shard of the samples, then gathered
                return dp.predict(self, x, batch_size, mc_samples, seed)
            if dp is not None and mc_samples is not None and seed is None:
                seed = dp.common_seed()      # every rank the same masks
            if mc_samples is not None:
                from .mc import _mc_moments
                if _adapters.is_source(x):
                    mean, m2, _ = _adapters.mc_moments(self, x, mc_samples, seed, batch_size,
                                                       steps)
                else:
                    mean, m2, _ = _mc_moments(self, x, mc_samples, seed, batch_size)
                return mean, np.sqrt(m2)
            if _adapters.is_source(x):
                return _adapters.predict(self, x, batch_size, steps)
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
            self._apply_head(h, out[lo:hi])
        return out

    def predict_on_batch(self, x):
        """``predict`` of one batch (as Keras)."""
        return self.predict(x, batch_size=max(1, len(x)) if hasattr(x, "__len__") else None)

    def __call__(self, x, training=False):
        """``model(x)`` equals ``predict(x)``; ``model(x, training=True)`` is one
        stochastic training-mode forward pass (dropout on, batch statistics), as in Keras
        3: no weight update, but BatchNormalization's moving statistics move as in a
        training step.  For Monte Carlo dropout use ``predict(x, mc_samples=T)``, which
        keeps BatchNorm in inference mode and never touches its statistics."""
        if not training:
            return self.predict(x)
        with self._lock:
            x = self._convert_x(x, check_finite=False)
            if not self.built:
                self._build(x.shape[1:])
            m = x.shape[0]
            self._ensure(x.shape[1:], m)
            h = self._forward(Context(TRAIN, m, step=self._step, seed=self.seed), x)
            return self._apply_head(h)

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
            metric_fns = self._metric_fns(self._y_shape)
            loss, z, yr, wm = self._guarded_step(x, y, w, m, segments, bool(self._reg_vars),
                                                 "in train_on_batch")
            self._check_weights_finite("after train_on_batch")
            res = {"loss": loss}
            for name, f, weighted in metric_fns:
                s_, c_ = f(z, yr, wm[weighted])
                res[name] = s_ / c_ if c_ else 0.0
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
                loss_sum = self._train_step(x, y, w, m)[0]
            finally:
                self._step = saved_step
                self._store.state[...] = state
            loss = loss_sum / m + (self._penalty() if self._reg_vars else 0.0)
            masks = {}
            for s in self._stages:
                masks.update(s.noise_masks(m))
            grads = [None if v.grad is None else np.array(v.grad) for v in self._store.vars]
            return {"loss": loss, "gradients": grads, "masks": masks}


"""Loss rows, the fused loss head, the output mask's row weights and the metrics: how a
batch's outputs and targets become the rows the loss and metrics reduce (Keras 3's
``compile_utils`` and ``losses.loss.apply_mask``), for vector and N-D outputs alike.

A mixin of ``Trainer``."""
import numpy as np

from .. import _core

_ACCURACY = ("accuracy", "acc")


class Heads:
    """Mixin of ``Trainer``: loss rows, heads, row weights and metric functions."""

    def _metric_fns(self, y_shape=None):
        """[(log name, fn(z, y, w) -> (weighted sum, weight), weighted)] for the compiled
        metrics, then the weighted metrics (a name both have is logged 'weighted_<name>').

        ``z``: the loss rows (rows, C) of the batch (logits when the model has a loss head,
        else its outputs), ``y`` the targets in rows ((rows, C), or (rows,) labels), ``w``
        per-row weights (sample weights times the output mask) or None.  Each metric is a
        Keras ``MeanMetricWrapper``: per-row values (the last axis reduced), their weighted
        sum over the weight sum.  ``'accuracy'``/``'acc'`` resolve as Keras 3 resolves them
        (``compile_utils.is_binary_or_sparse_categorical``), from the shapes alone: an
        output whose last axis is 1 -> binary accuracy; targets of lower rank than the
        output, or a last axis of 1 against more than one output -> sparse categorical;
        else categorical.  ``y_shape``: the targets' shape as the user gave them."""
        out_shape = tuple(self._out_shape) if self.built else (self.output_dim or 1,)
        p_rank, p_last = 1 + len(out_shape), out_shape[-1] if out_shape else 1
        if y_shape is None:          # the shape Keras would see for the loss's targets
            y_shape = (0,) + (out_shape[:-1] if self.loss.sparse else out_shape)
        y_shape = tuple(y_shape)
        t_rank, t_last = len(y_shape), (y_shape[-1] if len(y_shape) > 1 else None)
        fns = []
        plain = list(self.metrics)
        for weighted, ms in ((False, plain), (True, getattr(self, "weighted_metrics", []))):
            for m in ms:
                kind = m
                if m in _ACCURACY:
                    if p_last == 1:
                        kind = "binary_accuracy"
                    elif t_rank < p_rank or t_last == 1:
                        kind = "sparse_categorical_accuracy"
                    else:
                        kind = "categorical_accuracy"
                name = "weighted_" + m if (weighted and m in plain) else m
                fns.append((name, self._metric(kind), weighted))
        return fns

    def _metric(self, kind):
        sparse = self.loss.sparse

        def labels(y):                       # class indices per row
            if y.ndim == 1:
                return y
            return y[:, 0] if y.shape[1] == 1 else y.argmax(axis=1)

        def reduce(v, w):
            if w is None:
                return float(np.sum(v, dtype=np.float64)), v.shape[0]
            return float(np.dot(v.astype(np.float64), w)), float(np.sum(w, dtype=np.float64))

        if kind == "sparse_categorical_accuracy":
            def f(z, y, w):
                return reduce((z.argmax(axis=1) == labels(y)).astype(np.float32), w)
        elif kind == "categorical_accuracy":
            def f(z, y, w):
                t = y if sparse else y.argmax(axis=1)
                return reduce((z.argmax(axis=1) == t).astype(np.float32), w)
        elif kind == "binary_accuracy":
            def f(z, y, w):
                # Keras: y_true == (y_pred > 0.5) on the probabilities, y_true as given
                p = self._head_rows(z)
                yy = y.reshape(-1, 1) if y.ndim == 1 else y
                return reduce((yy == (p > 0.5)).mean(axis=1), w)
        else:
            sq = kind in ("mse", "mean_squared_error")

            def f(z, y, w):
                p = self._head_rows(z).astype(np.float64)
                yy = y.reshape(-1, 1) if y.ndim == 1 else y
                d = p - yy
                return reduce((d * d).mean(axis=1) if sq else np.abs(d).mean(axis=1), w)
        return f

    def _head_rows(self, z):
        """The model's outputs for loss rows z (the head applied row-wise)."""
        if self._head is None:
            return z
        return self._apply_head(z, np.empty(z.shape, np.float32))

    @property
    def _rows(self):
        """(R, C): loss rows per sample (the product of the output's leading axes, 1 for a
        vector output) and the last axis, over which losses and activations reduce."""
        s = tuple(self._out_shape)
        if not s:
            return 1, 1
        return int(np.prod(s[:-1], dtype=np.int64)) if len(s) > 1 else 1, int(s[-1])

    def _row_weights(self, w, mask, m, counts=None):
        """Per-row weights of a batch of m samples for the loss and for the metrics, as
        Keras applies ``sample_weight`` and the output mask: the loss uses the mask scaled
        by total/valid (``losses.loss.apply_mask``, reduction sum_over_batch_size), the
        metrics the mask as is (reduction 'sum').  Returns (loss row weights, (metric row
        weights: the mask alone, the mask times sample weights)); None for none.
        counts: None, or fn(valid, total) -> the (valid, total) of the whole global batch
        (fastdrop.distributed: a collective, called exactly once, (0, 0) without a mask)."""
        R = self._rows[0]
        wr = None
        if w is not None:
            wr = np.repeat(w, R) if (w.ndim == 1 and R > 1) else w.reshape(-1)
        mk = None
        if mask is not None:
            mk = np.asarray(mask).reshape(m, -1).astype(bool)
            if mk.shape[1] != R:
                if R % mk.shape[1]:
                    mk = None           # a mask that does not align with the outputs
                else:
                    mk = np.repeat(mk, R // mk.shape[1], axis=1)
        if mk is None:
            if counts is not None:
                counts(0, 0)
            return wr, (None, wr)
        valid, total = int(np.count_nonzero(mk)), mk.size
        if counts is not None:
            valid, total = counts(valid, total)
        fm = mk.reshape(-1).astype(np.float32)
        scale = np.float32(total / valid) if valid else np.float32(0.0)
        wm = fm if wr is None else wr * fm
        return np.ascontiguousarray(wm * scale, np.float32), (fm, wm)

    def _loss_rows(self, h, y, m):
        """The batch output h and targets y as loss rows (m*R, C) / (m*R,)."""
        R, C = self._rows
        z = h.reshape(m * R, C)
        return z, (y.reshape(m * R) if self.loss.sparse else y.reshape(m * R, C))

    def _apply_head(self, z, out=None):
        """The fused loss head (softmax or sigmoid) applied to logits z, on the output's
        last axis (each time step or pixel of an N-D output is a distribution, as Keras);
        out: a float32 array of z's size (any shape), or None."""
        C = self._rows[1] if self.built else z.shape[-1]
        z2 = z.reshape(-1, C)
        if out is None:
            out = np.empty(z.shape, np.float32)
        o2 = out.reshape(-1, C)
        if self._head == "softmax":
            _core.softmax(np.ascontiguousarray(z2), o2)
        elif self._head == "sigmoid":
            np.negative(z2, out=o2)
            np.exp(o2, out=o2)
            o2 += 1.0
            np.reciprocal(o2, out=o2)
        else:
            o2[...] = z2
        return out.reshape(z.shape)

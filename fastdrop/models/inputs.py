"""Input preparation shared by every loop: ``x`` converted once to C-contiguous float32
with its per-sample shape checked against the model, labels checked against the loss,
``sample_weight``/``class_weight`` combined as Keras 3 does (the batch loss is the mean of
weight x loss)."""
import math
import numbers

import numpy as np

from ._args import _shape_fits, _shape_str


class Inputs:
    """Mixin of ``Sequential``: converts and checks what the loops are given."""

    # ---------------------------------------------------------------- data input
    def _input_cast(self):
        """The integer/bool dtype of ``Input(..., dtype=...)`` inputs are cast to before
        float32, or None (a float input)."""
        first = self._layers[0] if self._layers else None
        return getattr(first, "cast_dtype", None) if getattr(first, "kind", None) == "input" \
            else None

    def _cast_x(self, x, dt, name):
        """x cast to the Input's integer/bool dtype as Keras converts inputs (floats
        truncate toward zero); NaN/inf, which no integer holds, are refused."""
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as e:
                raise TypeError(f"{name} must be array-like of numbers: {e}") from None
        if x.dtype == dt:
            return x
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values, which the model's "
                             f"{dt.name} input (Input(dtype={dt.name!r})) cannot hold")
        with np.errstate(invalid="ignore"):
            return x.astype(dt)

    def _convert_x(self, x, name="x", check_finite=True, allow_empty=False):
        dt = self._input_cast()
        if dt is not None:
            x = self._cast_x(x, dt, name)
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
        # the targets' shape as given: 'accuracy' resolves from it (Keras 3)
        self._y_shape = np.shape(y)
        y = self._convert_y(y, x.shape[0])
        return x, y, self._sample_weights(x.shape[0], y, sample_weight, class_weight)

    def _convert_y(self, y, n, name="y"):
        return self.loss.prepare_targets(y, n, tuple(self._out_shape), name)

    def _sample_weights(self, n, y, sample_weight, class_weight, name="sample_weight"):
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"{name} must hold numbers, got dtype {w.dtype}")
            w = w.astype(np.float64)
            steps = tuple(self._out_shape)[:-1]      # per-step weights of N-D outputs
            if w.ndim == 2 and w.shape[1] == 1 and steps != (1,):
                w = w[:, 0]
            if steps and w.shape == (n,) + steps + (1,):
                w = w.reshape((n,) + steps)
            if w.shape != (n,) and not (steps and w.shape == (n,) + steps):
                per_step = (f" or ({', '.join(str(d) for d in (n,) + steps)}) (one weight "
                            f"per sample and step)" if steps else "")
                raise ValueError(f"{name} must have shape ({n},) (one weight per sample)"
                                 f"{per_step}, got {w.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{name} must be finite and >= 0")
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError("class_weight must be a dict {class index: weight}")
            if y.ndim > (1 if self.loss.sparse else 2):
                raise ValueError("class_weight needs one target per sample; for per-step "
                                 "targets pass sample_weight of shape (n, steps) instead")
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


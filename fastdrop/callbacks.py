"""Training callbacks (Keras names and semantics) and the progress bar.

The protocol ``fit`` follows: ``cb.set_model(model)`` once, then ``on_train_begin()``,
per epoch ``on_epoch_begin(epoch)`` / ``on_epoch_end(epoch, logs)``, per step
``on_train_batch_begin(batch)`` / ``on_train_batch_end(batch, logs)``, and
``on_train_end()``.  ``logs`` are dicts of floats (``loss``, ``accuracy``, ``val_loss``,
...); a callback stops training by setting ``self.model.stop_training = True``.
"""
import collections.abc
import csv
import math
import os
import sys
import time

import numpy as np


class Callback:
    """Base class.  ``self.model`` is set by ``fit``; ``logs`` are dicts of floats.
    As in Keras, ``on_train_batch_begin`` / ``_end`` call ``on_batch_begin`` /
    ``_end`` unless overridden."""

    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    # evaluation / prediction hooks (Keras names; fastdrop's fit does not call them yet)
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class History(Callback):
    """Records per-epoch logs: ``history.history['loss']`` etc.; ``history.epoch``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.params = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _mode_for(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if ("acc" in monitor) else "min"
    return mode


class _Monitor(Callback):
    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        if not isinstance(monitor, str):
            raise ValueError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _value(self, logs):
        v = (logs or {}).get(self.monitor)
        if v is None:
            import warnings
            warnings.warn(f"{type(self).__name__}: monitored metric {self.monitor!r} is not "
                          f"available; available: {sorted(logs or {})}", RuntimeWarning)
        return v


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    optionally restore the best epoch's weights."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience!r}")
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        if self.baseline is not None:
            self.best = float(self.baseline)
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        v = self._value(logs)
        if v is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(v):
            self.best = v
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch > 0:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model (atomically) at the end of every epoch, or only when ``monitor``
    improved with ``save_best_only``.  ``filepath`` may contain ``{epoch}`` and log keys
    as format fields, e.g. ``'ckpt-{epoch:02d}-{val_loss:.3f}.fdm'``.
    ``save_weights_only=True`` writes only the weights, with ``model.save_weights(path)``
    (read back with ``model.load_weights``)."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto"):
        super().__init__(monitor, mode, 0.0)
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            v = self._value(logs)
            if v is None or not self._improved(v):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{v:.5f}, saving model to {path}")
            self.best = v
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)

    def on_train_begin(self, logs=None):
        if self.save_weights_only and not callable(getattr(self.model, "save_weights", None)):
            raise TypeError(f"ModelCheckpoint(save_weights_only=True) needs a model with "
                            f"save_weights(filepath); {type(self.model).__name__} has none")


def _check_settable_lr(model, who):
    opt = getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise ValueError(f"{who} needs a compiled model whose optimizer has a learning_rate")
    if getattr(opt, "schedule", None) is not None:
        raise TypeError(
            f"{who} cannot set the learning rate of an optimizer created with a "
            f"learning-rate schedule ({type(opt.schedule).__name__}): its learning rate is "
            f"not settable (as in Keras). Use a float learning_rate with {who}, or the "
            f"schedule alone.")


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch from ``schedule(epoch, lr)``
    (or ``schedule(epoch)``)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError("schedule must be callable: schedule(epoch, lr) -> lr")
        self.schedule = schedule
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        _check_settable_lr(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, opt.learning_rate)
        except TypeError:
            lr = self.schedule(epoch)
        opt.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving for
    ``patience`` epochs (then wait ``cooldown`` epochs), never below ``min_lr``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if not (0.0 < factor < 1.0):
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        _check_settable_lr(self.model, "ReduceLROnPlateau")
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        v = self._value(logs)
        opt = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = float(opt.learning_rate)
        if v is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(v):
            self.best = v
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                              f"rate to {new}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class TerminateOnNaN(Callback):
    """Stop training when a batch's loss is NaN or infinite (``raise_error=True``: raise
    ``RuntimeError`` instead).  fastdrop's ``fit`` already stops on a non-finite loss
    with ``NonFiniteLossError``; this callback also watches losses that other callbacks
    or custom loops put in the logs."""

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = bool(raise_error)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        try:
            bad = not math.isfinite(float(loss))
        except (TypeError, ValueError):
            return
        if bad:
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. "
                                   f"Loss value: {loss}. Terminating training immediately.")
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Stream the epoch logs to a CSV file (Keras layout): a header ``epoch,<keys>``
    (keys sorted; ``val_<key>`` columns added when the first epoch had no validation
    keys), then one row per epoch, flushed after each.  ``append=True`` appends to an
    existing file (no second header if it is not empty).  Missing values are ``NA``."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be a single character, got {separator!r}")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys = None
        self.writer = None
        self.csv_file = None
        self.append_header = True

    def on_train_begin(self, logs=None):
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "r", newline="") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            self.append_header = True
            mode = "w"
        self._close()
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    @staticmethod
    def _value(v):
        if isinstance(v, str):
            return v
        if isinstance(v, np.ndarray) and v.ndim == 0:
            return v.item()
        if isinstance(v, collections.abc.Iterable):
            return f'"[{", ".join(map(str, v))}]"'
        return v

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.csv_file is None:          # used without on_train_begin
            self.on_train_begin()
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        if self.writer is None:
            sep = self.sep

            class _Dialect(csv.excel):
                delimiter = sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         dialect=_Dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, self._value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def _close(self):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None

    def __getstate__(self):   # an open file does not pickle; a copy starts closed
        d = dict(self.__dict__)
        d["csv_file"] = d["writer"] = None
        return d


class LambdaCallback(Callback):
    """A callback from plain functions (Keras signature)::

        LambdaCallback(on_epoch_begin=f(epoch, logs), on_epoch_end=f(epoch, logs),
                       on_train_begin=f(logs), on_train_end=f(logs),
                       on_train_batch_begin=f(batch, logs), on_train_batch_end=f(batch, logs))

    ``on_batch_begin`` / ``on_batch_end`` are accepted as the Keras 2 names of the
    batch hooks."""

    _HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end",
              "on_train_batch_begin", "on_train_batch_end")

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None,
                 **kwargs):
        super().__init__()
        funcs = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for old, new in (("on_batch_begin", "on_train_batch_begin"),
                         ("on_batch_end", "on_train_batch_end")):
            if old in kwargs:
                f = kwargs.pop(old)
                if funcs[new] is not None and f is not None:
                    raise ValueError(f"give {new} or {old}, not both")
                funcs[new] = funcs[new] or f
        if kwargs:
            raise TypeError(f"LambdaCallback got unexpected arguments {sorted(kwargs)}; "
                            f"expected {list(self._HOOKS)}")
        for name, f in funcs.items():
            if f is not None and not callable(f):
                raise ValueError(f"{name} must be callable or None, got {f!r}")
        self._funcs = funcs

    def on_epoch_begin(self, epoch, logs=None):
        if self._funcs["on_epoch_begin"]:
            self._funcs["on_epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._funcs["on_epoch_end"]:
            self._funcs["on_epoch_end"](epoch, logs)

    def on_train_begin(self, logs=None):
        if self._funcs["on_train_begin"]:
            self._funcs["on_train_begin"](logs)

    def on_train_end(self, logs=None):
        if self._funcs["on_train_end"]:
            self._funcs["on_train_end"](logs)

    def on_train_batch_begin(self, batch, logs=None):
        if self._funcs["on_train_batch_begin"]:
            self._funcs["on_train_batch_begin"](batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._funcs["on_train_batch_end"]:
            self._funcs["on_train_batch_end"](batch, logs)


class ProgressBar:
    """One line per epoch: ``12/469 [=>....] - 2s - loss: 0.51 - accuracy: 0.81 -
    31,204 samples/s``.  Redrawn in place on a terminal (at most 10 times a second);
    elsewhere (logs, CI) printed once at the end of each epoch.  verbose=2 prints only
    the end-of-epoch line."""

    def __init__(self, verbose=1, stream=None):
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def epoch_begin(self, epoch, epochs, steps):
        self.steps = steps
        self.t0 = time.perf_counter()
        self.last = 0.0
        if self.verbose:
            print(f"Epoch {epoch + 1}/{epochs}", file=self.stream)

    def _line(self, step, samples, logs, final):
        dt = time.perf_counter() - self.t0
        width = 30
        if self.steps is None:      # a generator of unknown length, as Keras's Progbar
            parts = [f"{step}/Unknown", f"{dt:.0f}s"]
        else:
            done = int(width * step / max(self.steps, 1))
            bar = "=" * max(done - 1, 0) + (">" if done < width else "=") + "." * (width - done)
            parts = [f"{step}/{self.steps} [{bar}]", f"{dt:.0f}s" if final else f"ETA {dt / max(step, 1) * (self.steps - step):.0f}s"]
        parts += [f"{k}: {v:.4f}" for k, v in logs.items() if k != "learning_rate"]
        parts.append(f"{samples / dt if dt > 0 else 0:,.0f} samples/s")
        return " - ".join(parts)

    def update(self, step, samples, logs):
        if self.verbose != 1 or not self.tty:
            return
        now = time.perf_counter()
        if now - self.last < 0.1:
            return
        self.last = now
        self.stream.write("\r" + self._line(step, samples, logs, False) + "\x1b[K")
        self.stream.flush()

    def epoch_end(self, step, samples, logs):
        if not self.verbose:
            return
        if self.steps is None:
            self.steps = step
        line = self._line(step, samples, logs, True)
        self.stream.write(("\r" + line + "\x1b[K\n") if self.tty else line + "\n")
        self.stream.flush()

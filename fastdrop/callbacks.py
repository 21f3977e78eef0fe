"""Training callbacks (Keras names and semantics) and the progress bar."""
import math
import os
import sys
import time

import numpy as np


class Callback:
    """Base class.  ``self.model`` is set by ``fit``; ``logs`` are dicts of floats."""

    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


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
    as format fields, e.g. ``'ckpt-{epoch:02d}-{val_loss:.3f}.fdm'``."""

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
        self.model.save(path)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch from ``schedule(epoch, lr)``
    (or ``schedule(epoch)``)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError("schedule must be callable: schedule(epoch, lr) -> lr")
        self.schedule = schedule
        self.verbose = verbose

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
        line = self._line(step, samples, logs, True)
        self.stream.write(("\r" + line + "\x1b[K\n") if self.tty else line + "\n")
        self.stream.flush()

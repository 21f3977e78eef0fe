"""Robustness of training state, checkpoints and memory.

* ``KeyboardInterrupt`` during ``fit`` (raised at global step k from the loss or from the
  optimizer update, or from a callback's ``on_epoch_end``) leaves the model usable: finite
  weights bitwise equal to a run of exactly k steps (built with ``steps_per_epoch``),
  ``predict`` works, ``model.history`` holds the completed epochs, and training resumes.
* ``ModelCheckpoint`` files are always loadable: every epoch's file equals the weights at
  that epoch's end and resumes exactly; a save interrupted by ``KeyboardInterrupt`` or by a
  failed (partial) write inside ``fit`` leaves the previous checkpoint intact and no
  temporary file behind.  (The plain ``save`` + OSError case is in test_models.py.)
* Memory: 30 cycles of build/fit/predict/save/load_model/MC-predict do not grow the
  resident set by more than 20 MB after a warm-up (measured from /proc/self/statm).
"""
import ctypes
import gc
import os

import numpy as np
import pytest

from fastdrop import Dense, Dropout, Sequential, load_model
from fastdrop.callbacks import Callback, ModelCheckpoint
from fastdrop.optimizers import Adam
import helpers

N, BATCH = 200, 32
STEPS_PER_EPOCH = -(-N // BATCH)     # 7 (the last batch has 8 rows)


def blobs(n=N, d=12, classes=3, seed=0):
    return helpers.blobs(n, d, classes, seed, spread=2.0)


def make(seed=5, d=12):
    m = Sequential([Dense(32, activation="relu", input_dim=d), Dropout(0.4),
                    Dense(16, activation="relu"), Dropout(0.2),
                    Dense(3, activation="softmax")], seed=seed)
    m.compile(Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def reference_after_steps(k, x, y, seed=5):
    """A model trained for exactly k global steps (whole epochs, then a partial one)."""
    ref = make(seed)
    ref.build()
    ref.optimizer.build(ref.count_params())
    full, rest = divmod(k, STEPS_PER_EPOCH)
    if full:
        ref.fit(x, y, epochs=full, batch_size=BATCH, verbose=0)
    if rest:
        ref.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, steps_per_epoch=rest)
    assert ref._step == k and ref.optimizer.iterations == k
    return ref


def assert_same_state(m, ref):
    for a, b in zip(m.get_weights(), ref.get_weights()):
        assert a.tobytes() == b.tobytes()
    assert m.optimizer.state().tobytes() == ref.optimizer.state().tobytes()
    assert m.optimizer.iterations == ref.optimizer.iterations
    assert m._step == ref._step


# --------------------------------------------------------- KeyboardInterrupt in fit
@pytest.mark.parametrize("where", ["optimizer", "loss"])
@pytest.mark.parametrize("k", [0, 3, STEPS_PER_EPOCH, 10, 2 * STEPS_PER_EPOCH + 6])
def test_keyboard_interrupt_at_step_k_leaves_k_steps(where, k):
    x, y = blobs()
    model = make()
    if where == "optimizer":
        obj, name = model.optimizer, "apply"
    else:
        obj, name = model.loss, "forward_backward"
    real = getattr(obj, name)
    calls = [0]

    def interrupting(*args, **kwargs):
        if calls[0] == k:                 # after k completed steps
            raise KeyboardInterrupt
        calls[0] += 1
        return real(*args, **kwargs)

    setattr(obj, name, interrupting)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, batch_size=BATCH, verbose=0)
    delattr(obj, name)

    assert all(np.isfinite(w).all() for w in model.get_weights())
    ref = reference_after_steps(k, x, y)
    assert_same_state(model, ref)
    done = k // STEPS_PER_EPOCH
    assert model.history.epoch == list(range(done))
    assert len(model.history.history.get("loss", [])) == done
    np.testing.assert_array_equal(model.predict(x), ref.predict(x))
    # and training goes on exactly as for the uninterrupted reference
    model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    ref.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    assert_same_state(model, ref)


class InterruptAtEpochEnd(Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_keyboard_interrupt_from_on_epoch_end():
    x, y = blobs()
    model = make()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, batch_size=BATCH, verbose=0,
                  callbacks=[InterruptAtEpochEnd(2)])
    ref = reference_after_steps(3 * STEPS_PER_EPOCH, x, y)
    assert_same_state(model, ref)
    # History runs after user callbacks (as in Keras): the interrupted epoch's logs are
    # not recorded, the two before it are
    assert model.history.epoch == [0, 1]
    assert len(model.history.history["loss"]) == 2
    assert np.isfinite(model.predict(x)).all()


class BatchCounter(Callback):
    def __init__(self):
        super().__init__()
        self.begin = []
        self.end = []

    def on_train_batch_begin(self, batch, logs=None):
        self.begin.append(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.end.append(batch)


def test_batch_hooks_are_called():
    x, y = blobs()
    cb = BatchCounter()
    make().fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[cb])
    assert cb.begin == list(range(STEPS_PER_EPOCH)) * 2
    assert cb.end == list(range(STEPS_PER_EPOCH)) * 2


# ------------------------------------------------------------------ checkpoints
class Snapshots(Callback):
    """Weights, optimizer state and step at each epoch end (after the checkpoints)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        m = self.model
        self.states.append((m.get_weights(), m.optimizer.state().copy(),
                            m.optimizer.iterations, m._step))


def _assert_model_has(model, snap):
    weights, state, iterations, step = snap
    for a, b in zip(model.get_weights(), weights):
        assert a.tobytes() == b.tobytes()
    assert model.optimizer.state().tobytes() == state.tobytes()
    assert model.optimizer.iterations == iterations and model._step == step


def test_every_checkpoint_loads_equals_its_epoch_and_resumes(tmp_path):
    x, y = blobs()
    snaps = Snapshots()
    model = make()
    model.fit(x, y, epochs=4, batch_size=BATCH, verbose=0, callbacks=[
        ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.fdm")),
        ModelCheckpoint(str(tmp_path / "last.fdm")), snaps])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ckpt-01.fdm", "ckpt-02.fdm", "ckpt-03.fdm", "ckpt-04.fdm", "last.fdm"]
    for e in range(4):
        _assert_model_has(load_model(tmp_path / f"ckpt-{e + 1:02d}.fdm"), snaps.states[e])
    _assert_model_has(load_model(tmp_path / "last.fdm"), snaps.states[-1])
    resumed = load_model(tmp_path / "ckpt-02.fdm")
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=BATCH, verbose=0)
    assert_same_state(resumed, model)


class _Boom(Exception):
    pass


@pytest.mark.parametrize("failure", ["keyboard-interrupt-before-rename", "partial-write"])
def test_failed_checkpoint_keeps_previous_file(tmp_path, monkeypatch, failure):
    """The 3rd epoch's checkpoint save fails midway; last.fdm still holds epoch 2."""
    import fastdrop.io.native as saving

    x, y = blobs()
    snaps = Snapshots()
    path = tmp_path / "last.fdm"
    saves = [0]
    if failure == "keyboard-interrupt-before-rename":
        real_fsync = os.fsync

        def fsync(fd):                     # data written, not yet renamed into place
            saves[0] += 1
            if saves[0] == 3:
                raise KeyboardInterrupt
            return real_fsync(fd)
        monkeypatch.setattr(saving.os, "fsync", fsync)
        expected = KeyboardInterrupt
    else:
        real_savez = np.savez

        def savez(f, **arrays):            # the disk fills up halfway through the file
            saves[0] += 1
            if saves[0] == 3:
                import io
                buf = io.BytesIO()
                real_savez(buf, **arrays)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise OSError(28, "No space left on device")
            return real_savez(f, **arrays)
        monkeypatch.setattr(saving.np, "savez", savez)
        expected = OSError

    model = make()
    with pytest.raises(expected):
        model.fit(x, y, epochs=4, batch_size=BATCH, verbose=0,
                  callbacks=[snaps, ModelCheckpoint(str(path))])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.fdm"]   # no temp file
    _assert_model_has(load_model(path), snaps.states[1])
    # the model itself finished epoch 3 before the failed save, and is usable
    _assert_model_has(model, snaps.states[2])
    assert np.isfinite(model.predict(x)).all()


# ----------------------------------------------------------------------- memory
def _rss_bytes():
    """Resident set size after a garbage collection and, on glibc, malloc_trim(0): freed
    heap pages go back to the OS, so what remains is what is still allocated (without the
    trim the figure jumps by tens of MB with the allocator's thresholds)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RSS_BOUND = 20 * 2**20       # measured growth on Linux/glibc: 0 MB over 30 cycles


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_repeated_fit_predict_load_cycles_do_not_grow_rss(tmp_path):
    # ~1 MB of weights: a model (weights + gradients + Adam state + buffers, > 4 MB) kept
    # alive per cycle would grow RSS by > 120 MB
    x, y = blobs(256, d=256, classes=10)
    xp = blobs(700, d=256, classes=10, seed=1)[0]
    path = tmp_path / "cycle.fdm"

    def cycle(i):
        m = Sequential([Dense(512, activation="relu", input_dim=256), Dropout(0.5),
                        Dense(256, activation="relu"), Dropout(0.3),
                        Dense(10, activation="softmax")], seed=i)
        m.compile(Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=1, batch_size=64, verbose=0, validation_split=0.1)
        m.predict(xp)
        m.save(path)
        m2 = load_model(path)
        m2.predict(xp, mc_samples=3, seed=i)
        m2.evaluate(x, y)

    for i in range(5):                     # warm-up: allocator pools, GEMM buffers, imports
        cycle(i)
    before = _rss_bytes()
    samples = []
    for i in range(30):
        cycle(100 + i)
        if i % 10 == 9:
            samples.append(_rss_bytes() - before)
    growth = samples[-1]
    assert growth < RSS_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB over 30 cycles " \
                               f"(samples every 10 cycles: " \
                               f"{[round(s / 2**20, 1) for s in samples]} MiB)"

"""Callbacks: TerminateOnNaN, CSVLogger, LambdaCallback, ModelCheckpoint(save_weights_only),
the schedule guard of LearningRateScheduler / ReduceLROnPlateau, and the Keras batch-hook
aliases.  Real models where the model already supports it; a minimal fake model where
the callback needs model API that is not in the tree yet (save_weights)."""
import csv
import math
import pickle

import numpy as np
import pytest

from fastdrop import callbacks as C, optimizers as O, schedules as S
from fastdrop.layers import Dense
from fastdrop.models import Sequential


def _data(n=96):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y


def _model(opt=None):
    m = Sequential([Dense(8, activation="relu", input_dim=6), Dense(2, activation="softmax")],
                   seed=3)
    m.compile(opt or O.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


class FakeModel:
    """The smallest object the callbacks talk to."""

    def __init__(self):
        self.stop_training = False
        self.saved = []
        self.optimizer = O.SGD(0.1)

    def save(self, path):
        self.saved.append(("save", path))

    def save_weights(self, path):
        self.saved.append(("save_weights", path))


def _drive(cb, model, epochs_logs, batches=2):
    """Run the fit protocol by hand with the given per-epoch logs."""
    cb.set_model(model)
    cb.on_train_begin()
    for e, logs in enumerate(epochs_logs):
        cb.on_epoch_begin(e)
        for b in range(batches):
            cb.on_train_batch_begin(b)
            cb.on_train_batch_end(b, {"loss": logs.get("loss", 0.0)})
            if model.stop_training:
                break
        cb.on_epoch_end(e, dict(logs))
        if model.stop_training:
            break
    cb.on_train_end()


# ---------------------------------------------------------------- TerminateOnNaN
def test_terminate_on_nan_stops_and_raises(capsys):
    fm = FakeModel()
    _drive(C.TerminateOnNaN(), fm, [{"loss": 1.0}, {"loss": math.nan}, {"loss": 0.5}])
    assert fm.stop_training
    assert "Batch 0: Invalid loss, terminating training" in capsys.readouterr().out
    fm = FakeModel()
    _drive(C.TerminateOnNaN(), fm, [{"loss": 1.0}, {"loss": 0.5}])
    assert not fm.stop_training
    cb = C.TerminateOnNaN(raise_error=True)
    cb.set_model(FakeModel())
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        cb.on_train_batch_end(3, {"loss": math.inf})


def test_terminate_on_nan_in_a_real_fit_does_nothing_on_finite_losses():
    x, y = _data()
    m = _model()
    h = m.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[C.TerminateOnNaN()])
    assert len(h.epoch) == 2


# -------------------------------------------------------------------- CSVLogger
def test_csv_logger_real_fit(tmp_path):
    x, y = _data()
    path = tmp_path / "log.csv"
    m = _model()
    h = m.fit(x, y, epochs=3, batch_size=32, verbose=0, validation_data=(x[:32], y[:32]),
              callbacks=[C.CSVLogger(path)])
    rows = list(csv.DictReader(open(path, newline="")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    for k in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([float(r[k]) for r in rows], h.history[k], rtol=1e-12)
    # append: no second header
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, validation_data=(x[:32], y[:32]),
          callbacks=[C.CSVLogger(path, append=True)])
    lines = open(path).read().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch,") and lines[4].startswith("0,")
    # append=False truncates
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[C.CSVLogger(path)])
    assert len(open(path).read().splitlines()) == 2


def test_csv_logger_separator_and_missing_validation(tmp_path):
    path = tmp_path / "log.tsv"
    fm = FakeModel()
    _drive(C.CSVLogger(path, separator="\t"), fm, [{"loss": 0.5, "accuracy": 0.7},
                                                   {"loss": 0.25, "accuracy": 0.8}])
    lines = open(path).read().splitlines()
    assert lines[0] == "epoch\taccuracy\tloss\tval_accuracy\tval_loss"
    assert lines[1] == "0\t0.7\t0.5\tNA\tNA"
    assert lines[2] == "1\t0.8\t0.25\tNA\tNA"
    with pytest.raises(ValueError, match="separator"):
        C.CSVLogger(path, separator="||")


def test_csv_logger_empty_existing_file_gets_a_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("")
    _drive(C.CSVLogger(path, append=True), FakeModel(), [{"loss": 1.0}])
    assert open(path).read().splitlines()[0] == "epoch,loss,val_loss"


def test_csv_logger_pickles_closed(tmp_path):
    cb = C.CSVLogger(tmp_path / "a.csv")
    cb.set_model(FakeModel())
    cb.on_train_begin()
    cb2 = pickle.loads(pickle.dumps(cb))
    assert cb2.csv_file is None and cb2.filename == cb.filename
    cb.on_train_end()


# ---------------------------------------------------------------- LambdaCallback
def test_lambda_callback_calls_every_hook_in_a_real_fit():
    x, y = _data()
    calls = []
    cb = C.LambdaCallback(
        on_epoch_begin=lambda e, logs: calls.append(("eb", e)),
        on_epoch_end=lambda e, logs: calls.append(("ee", e, sorted(logs))),
        on_train_begin=lambda logs: calls.append(("tb",)),
        on_train_end=lambda logs: calls.append(("te",)),
        on_batch_begin=lambda b, logs: calls.append(("bb", b)),
        on_batch_end=lambda b, logs: calls.append(("be", b, sorted(logs))))
    m = _model()
    m.fit(x, y, epochs=2, batch_size=48, verbose=0, callbacks=[cb])
    assert calls[0] == ("tb",) and calls[-1] == ("te",)
    assert calls[1:7] == [("eb", 0), ("bb", 0), ("be", 0, ["accuracy", "loss"]), ("bb", 1),
                          ("be", 1, ["accuracy", "loss"]), ("ee", 0, ["accuracy", "loss"])]
    assert len(calls) == 2 + 2 * 6


def test_lambda_callback_arguments():
    seen = []
    cb = C.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    _drive(cb, FakeModel(), [{"loss": 1.0}], batches=3)
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError, match="on_epoch_end must be callable"):
        C.LambdaCallback(on_epoch_end=3)
    with pytest.raises(TypeError, match="unexpected arguments"):
        C.LambdaCallback(on_epoch_finish=print)
    with pytest.raises(ValueError, match="not both"):
        C.LambdaCallback(on_batch_end=print, on_train_batch_end=print)


def test_base_callback_batch_aliases():
    class Count(C.Callback):
        n = 0

        def on_batch_end(self, batch, logs=None):
            Count.n += 1

    _drive(Count(), FakeModel(), [{"loss": 1.0}, {"loss": 1.0}], batches=3)
    assert Count.n == 6


# -------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_save_weights_only_calls_save_weights(tmp_path):
    fm = FakeModel()
    pattern = str(tmp_path / "w-{epoch:02d}.fdw")
    _drive(C.ModelCheckpoint(pattern, save_weights_only=True), fm,
           [{"loss": 1.0}, {"loss": 0.5}])
    assert fm.saved == [("save_weights", str(tmp_path / "w-01.fdw")),
                        ("save_weights", str(tmp_path / "w-02.fdw"))]
    fm = FakeModel()
    _drive(C.ModelCheckpoint(pattern, monitor="loss", save_best_only=True,
                             save_weights_only=True), fm,
           [{"loss": 1.0}, {"loss": 2.0}, {"loss": 0.5}])
    assert [p for _, p in fm.saved] == [str(tmp_path / "w-01.fdw"), str(tmp_path / "w-03.fdw")]
    fm = FakeModel()
    _drive(C.ModelCheckpoint(pattern), fm, [{"loss": 1.0}])
    assert fm.saved == [("save", str(tmp_path / "w-01.fdw"))]


def test_model_checkpoint_weights_only_needs_save_weights():
    class NoWeights(FakeModel):
        save_weights = None

    cb = C.ModelCheckpoint("x.fdw", save_weights_only=True)
    cb.set_model(NoWeights())
    with pytest.raises(TypeError, match="needs a model with save_weights"):
        cb.on_train_begin()


def test_model_checkpoint_weights_only_real_model(tmp_path):
    m = _model()
    if not hasattr(m, "save_weights"):
        pytest.skip("Sequential.save_weights is not in this tree yet")
    x, y = _data()
    path = tmp_path / "ckpt.weights.fdw"
    m.fit(x, y, epochs=1, batch_size=32, verbose=0,
          callbacks=[C.ModelCheckpoint(str(path), save_weights_only=True)])
    m2 = _model()
    m2.build(6)
    m2.load_weights(str(path))
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------- learning-rate callbacks + schedules
def test_lr_callbacks_refuse_a_schedule():
    x, y = _data()
    for cb in (C.LearningRateScheduler(lambda e, lr: lr * 0.5),
               C.ReduceLROnPlateau(monitor="loss")):
        m = _model(O.Adam(S.ExponentialDecay(0.01, 10, 0.9)))
        with pytest.raises(TypeError, match="not settable"):
            m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])


def test_lr_scheduler_still_sets_a_float_rate():
    x, y = _data()
    m = _model(O.RMSprop(0.01))
    h = m.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[C.LearningRateScheduler(lambda e, lr: 0.01 / (e + 1))])
    np.testing.assert_allclose(h.history["learning_rate"], [0.01, 0.005, 0.01 / 3])

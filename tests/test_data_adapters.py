"""fit / evaluate / predict on Python generators, PyDataset-style sequences and torch
DataLoaders (fastdrop.models.data_adapters), against the array path as the oracle: the
same batches in the same order must give the same bits (dropout keyed by step and row in
training, MC by the global sample index), and the epochs follow Keras 3's EpochIterator
(keras/src/trainers/epoch_iterator.py: steps_per_epoch carries the iterator across
epochs, a source that runs out first ends the epoch with a warning)."""
import warnings

import numpy as np
import pytest

import fastdrop
from fastdrop.callbacks import Callback
from fastdrop.layers import (LSTM, Conv2D, Dense, Dropout, Embedding, Flatten,
                             GlobalAveragePooling1D)
from fastdrop.models import Sequential
from fastdrop.utils import PyDataset

N, BS = 70, 16          # 5 batches, the last one of 6 rows


def _data(kind, n=N, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        x = rng.normal(size=(n, 6)).astype(np.float32)
    elif kind == "conv":
        x = rng.normal(size=(n, 6, 6, 2)).astype(np.float32)
    elif kind == "rnn":
        x = rng.normal(size=(n, 5, 3)).astype(np.float32)
    else:
        x = rng.integers(1, 12, size=(n, 7))
        x[:, 5:] = 0                                   # padding
    y = rng.integers(0, 3, n)
    return x, y


def _model(kind, seed=5):
    if kind == "dense":
        layers = [Dense(12, activation="relu", input_shape=(6,)), Dropout(0.3),
                  Dense(3, activation="softmax")]
    elif kind == "conv":
        layers = [Conv2D(4, 3, activation="relu", input_shape=(6, 6, 2)), Dropout(0.25),
                  Flatten(), Dense(3, activation="softmax")]
    elif kind == "rnn":
        layers = [LSTM(6, dropout=0.2, recurrent_dropout=0.2, input_shape=(5, 3)),
                  Dense(3, activation="softmax")]
    else:
        layers = [Embedding(12, 4, mask_zero=True, input_length=7), Dropout(0.2),
                  GlobalAveragePooling1D(), Dense(3, activation="softmax")]
    m = Sequential(layers, seed=seed)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for p, q in zip(wa, wb):
        np.testing.assert_array_equal(p, q)


def _batches(x, y=None, w=None, bs=BS):
    out = []
    for lo in range(0, len(x), bs):
        t = (x[lo:lo + bs],)
        if y is not None:
            t += (y[lo:lo + bs],)
        if w is not None:
            t += (w[lo:lo + bs],)
        out.append(t)
    return out


class Seq(PyDataset):
    """The batches of arrays; records the indices read."""

    def __init__(self, x, y=None, w=None, bs=BS, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.w, self.bs = x, y, w, bs
        self.read = []
        self.epoch_ends = 0
        self.epoch_begins = 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        self.read.append(i)
        s = slice(i * self.bs, (i + 1) * self.bs)
        t = (self.x[s],)
        if self.y is not None:
            t += (self.y[s],)
        if self.w is not None:
            t += (self.w[s],)
        return t

    def on_epoch_begin(self):
        self.epoch_begins += 1

    def on_epoch_end(self):
        self.epoch_ends += 1


def _gen(batches, repeat=1):
    for _ in range(repeat):
        for b in batches:
            yield b


# --------------------------------------------------------------- fit == arrays
@pytest.mark.parametrize("kind", ["dense", "conv", "rnn", "embedding"])
def test_fit_generator_equals_arrays_bitwise(kind):
    x, y = _data(kind)
    a = _model(kind)
    ha = a.fit(x, y, batch_size=BS, epochs=2, shuffle=False, verbose=0)
    b = _model(kind)
    hb = b.fit(_gen(_batches(x, y), repeat=2), steps_per_epoch=5, epochs=2, shuffle=False,
               verbose=0)
    _same_weights(a, b)
    assert ha.history == hb.history
    assert a._step == b._step == 10


def test_fit_sample_weight_and_class_weight_batches_equal_arrays():
    x, y = _data("dense")
    w = np.random.default_rng(1).uniform(0.1, 2.0, N).astype(np.float32)
    cw = {0: 1.0, 1: 2.5, 2: 0.5}
    a = _model("dense")
    ha = a.fit(x, y, batch_size=BS, sample_weight=w, class_weight=cw, shuffle=False, verbose=0)
    b = _model("dense")
    hb = b.fit(_gen(_batches(x, y, w)), class_weight=cw, shuffle=False, verbose=0)
    _same_weights(a, b)
    assert ha.history == hb.history


@pytest.mark.parametrize("workers,mp", [(1, False), (0, False), (3, False), (2, True)])
def test_fit_pydataset_equals_arrays_with_workers(workers, mp):
    x, y = _data("dense")
    a = _model("dense")
    ha = a.fit(x, y, batch_size=BS, epochs=3, shuffle=False, verbose=0,
               validation_data=(x[:30], y[:30]))
    ds = Seq(x, y, workers=workers, use_multiprocessing=mp, max_queue_size=2)
    b = _model("dense")
    hb = b.fit(ds, epochs=3, shuffle=False, verbose=0, validation_data=(x[:30], y[:30]))
    _same_weights(a, b)
    assert ha.history == hb.history
    assert ds.epoch_begins == ds.epoch_ends == 3
    if not mp:
        assert ds.read == [0, 1, 2, 3, 4] * 3


def test_pydataset_shuffle_permutes_batches_per_epoch_reproducibly():
    """Keras's PyDatasetAdapter shuffles the batch order of each pass with shuffle=True;
    the oracle is a generator yielding the batches in the order that was read."""
    x, y = _data("dense")
    ds = Seq(x, y)
    a = _model("dense")
    a.fit(ds, epochs=3, verbose=0)                        # shuffle=True (default)
    order = ds.read
    assert sorted(order[:5]) == sorted(order[5:10]) == list(range(5))
    assert order[:5] != order[5:10] or order[5:10] != order[10:]
    b = _model("dense")
    b.fit(_gen([Seq(x, y)[i] for i in order]), steps_per_epoch=5, epochs=3, shuffle=False,
          verbose=0)
    _same_weights(a, b)
    ds2 = Seq(x, y)
    _model("dense").fit(ds2, epochs=3, verbose=0)
    assert ds2.read == order                              # keyed by the model seed


def test_pydataset_steps_per_epoch_carries_on_across_epochs_as_keras():
    """len 5, steps_per_epoch=3: epoch 1 reads 0-2, epoch 2 reads 3-4 and warns (ran out),
    epoch 3 starts a new pass (Keras's EpochIterator)."""
    x, y = _data("dense")
    ds = Seq(x, y)
    m = _model("dense")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        h = m.fit(ds, steps_per_epoch=3, epochs=3, shuffle=False, verbose=0)
    assert ds.read == [0, 1, 2, 3, 4, 0, 1, 2]
    assert len(h.history["loss"]) == 3
    assert sum("ran out of data" in str(w.message) for w in rec) == 1
    assert m._step == 8


def test_generator_exhausted_before_steps_per_epoch_warns_and_stops():
    x, y = _data("dense")
    a = _model("dense")
    a.fit(x, y, batch_size=BS, shuffle=False, verbose=0)    # the 5 batches, once
    b = _model("dense")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        h = b.fit(_gen(_batches(x, y)), steps_per_epoch=3, epochs=4, shuffle=False, verbose=0)
    assert any("ran out of data" in str(w.message) for w in rec)
    assert len(h.history["loss"]) == 2              # 3 steps, then 2, then nothing left
    assert b._step == 5
    _same_weights(a, b)


def test_finite_generator_without_steps_is_one_epoch_then_stops():
    x, y = _data("dense")
    b = _model("dense")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        h = b.fit(_gen(_batches(x, y)), epochs=3, shuffle=False, verbose=0)
    assert len(h.history["loss"]) == 1 and b._step == 5
    assert h.params["steps"] is None
    assert any("ran out of data" in str(w.message) for w in rec)


def test_generator_shuffle_true_warns_as_keras():
    x, y = _data("dense")
    with pytest.warns(UserWarning, match="shuffle=True"):
        _model("dense").fit(_gen(_batches(x, y)), verbose=0)


def test_callbacks_and_progress_bar_see_every_batch(capsys):
    x, y = _data("dense")

    class Rec(Callback):
        def __init__(self):
            super().__init__()
            self.events = []

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(("eb", epoch))

        def on_train_batch_end(self, batch, logs=None):
            self.events.append(("b", batch))

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(("ee", epoch, sorted(logs)))

    ra, rb = Rec(), Rec()
    _model("dense").fit(x, y, batch_size=BS, epochs=2, shuffle=False, verbose=0, callbacks=[ra],
                        validation_data=(x, y))
    capsys.readouterr()
    _model("dense").fit(_gen(_batches(x, y), 2), steps_per_epoch=5, epochs=2, verbose=1,
                        shuffle=False, callbacks=[rb], validation_data=_gen(_batches(x, y), 2),
                        validation_steps=5)
    assert ra.events == rb.events
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "5/5" in out and "val_loss" in out


# --------------------------------------------------------- validation/evaluate
def test_validation_generator_and_steps_equal_arrays():
    x, y = _data("dense")
    xv, yv = _data("dense", n=40, seed=3)
    a = _model("dense")
    ha = a.fit(x, y, batch_size=BS, epochs=2, shuffle=False, verbose=0, validation_data=(xv, yv),
               validation_steps=2)                 # the first 2 batches of 16: 32 rows
    b = _model("dense")
    hb = b.fit(Seq(x, y), epochs=2, shuffle=False, verbose=0,
               validation_data=_gen([(xv[:32], yv[:32])] * 2), validation_steps=1)
    np.testing.assert_allclose(hb.history["val_loss"], ha.history["val_loss"], rtol=1e-6)
    assert hb.history["val_accuracy"] == ha.history["val_accuracy"]
    va = a.evaluate(xv[:32], yv[:32], verbose=0)
    np.testing.assert_allclose(ha.history["val_loss"][-1], va[0], rtol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "embedding"])
def test_evaluate_sources_equal_arrays(kind):
    x, y = _data(kind)
    w = np.random.default_rng(2).uniform(0.5, 1.5, N)
    m = _model(kind)
    m.fit(x, y, batch_size=BS, verbose=0)
    ref = m.evaluate(x, y, batch_size=BS, sample_weight=w, verbose=0, return_dict=True)
    got = m.evaluate(_gen(_batches(x, y, w)), verbose=0, return_dict=True)
    assert got == ref
    assert m.evaluate(Seq(x, y, w, workers=2), verbose=0, return_dict=True) == ref
    part = m.evaluate(x, y, batch_size=BS, sample_weight=w, steps=2, verbose=0)
    assert part == m.evaluate(x[:32], y[:32], batch_size=BS, sample_weight=w[:32], verbose=0)
    assert m.evaluate(Seq(x, y, w), steps=2, verbose=0) == part


# ---------------------------------------------------------------------- predict
@pytest.mark.parametrize("kind", ["dense", "conv", "rnn", "embedding"])
def test_predict_and_mc_predict_on_generators_equal_arrays(kind):
    x, y = _data(kind)
    m = _model(kind)
    ref = m.predict(x)
    for src in (_gen([b[0] for b in _batches(x, bs=9)]),            # bare arrays
                _gen(_batches(x, bs=9)),                            # (x,)
                _gen(_batches(x, y, bs=9)),                         # (x, y): y ignored
                Seq(x, bs=11, workers=2)):
        np.testing.assert_array_equal(m.predict(src), ref)
    mean, std = m.predict(x, mc_samples=6, seed=11)
    gm, gs = m.predict(_gen(_batches(x, bs=9)), mc_samples=6, seed=11)
    np.testing.assert_array_equal(gm, mean)
    np.testing.assert_array_equal(gs, std)
    pm, ps = m.predict(Seq(x, bs=13), mc_samples=6, seed=11, steps=2)
    np.testing.assert_array_equal(pm, mean[:26])
    from fastdrop.uncertainty import mc_predict
    r = mc_predict(m, _gen(_batches(x, bs=20)), mc_samples=6, seed=11)
    np.testing.assert_array_equal(r.mean, mean)


def test_predict_steps_on_arrays_and_generators():
    x, _ = _data("dense")
    m = _model("dense")
    ref = m.predict(x)
    np.testing.assert_array_equal(m.predict(x, batch_size=BS, steps=2), ref[:32])
    np.testing.assert_array_equal(m.predict(_gen(_batches(x)), steps=3), ref[:48])


def test_unbuilt_model_builds_from_the_first_batch():
    x, y = _data("dense")
    a = Sequential([Dense(8, activation="relu"), Dropout(0.2), Dense(3, activation="softmax")],
                   seed=9)
    a.compile("sgd", "sparse_categorical_crossentropy")
    a.fit(x, y, batch_size=BS, shuffle=False, verbose=0)
    b = Sequential([Dense(8, activation="relu"), Dropout(0.2), Dense(3, activation="softmax")],
                   seed=9)
    b.compile("sgd", "sparse_categorical_crossentropy")
    b.fit(_gen(_batches(x, y)), shuffle=False, verbose=0)
    _same_weights(a, b)


# ----------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    x, y = _data("dense")
    m = _model("dense")
    with pytest.raises(ValueError, match="y must not be given"):
        m.fit(_gen(_batches(x, y)), y, verbose=0)
    with pytest.raises(ValueError, match="sample_weight must not be given"):
        m.evaluate(Seq(x, y), sample_weight=np.ones(N), verbose=0)
    with pytest.raises(ValueError, match="no targets"):
        m.fit(_gen(_batches(x)), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        m.fit(Seq(x, y), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="batch 2 of the generator.*per-sample shape"):
        bad = _batches(x, y)
        bad[2] = (bad[2][0][:, :4], bad[2][1])
        m.fit(_gen(bad), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="yields no batches"):
        m.predict(_gen([]))

    class Endless(PyDataset):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, i):
            return x[:BS], y[:BS]

    with pytest.raises(ValueError, match="steps_per_epoch"):
        m.fit(Endless(), verbose=0)
    h = m.fit(Endless(), steps_per_epoch=2, epochs=2, verbose=0)
    assert len(h.history["loss"]) == 2
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        m.fit(Seq(x, y), steps_per_epoch=0, verbose=0)


def test_not_uncompiled():
    x, y = _data("dense")
    m = Sequential([Dense(3, input_shape=(6,))])
    gen = _gen(_batches(x, y))
    with pytest.raises(RuntimeError, match="compiled"):
        m.fit(gen, verbose=0)


# ------------------------------------------------------------- torch / keras
def test_torch_dataloader_equals_arrays():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset
    x, y = _data("rnn")
    a = _model("rnn")
    ha = a.fit(x, y, batch_size=BS, epochs=2, shuffle=False, verbose=0)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BS,
                        shuffle=False)
    b = _model("rnn")
    hb = b.fit(loader, epochs=2, shuffle=False, verbose=0, validation_data=loader)
    _same_weights(a, b)
    assert hb.history["loss"] == ha.history["loss"]
    assert hb.params["steps"] == 5
    np.testing.assert_array_equal(b.predict(loader), a.predict(x))
    assert b.evaluate(loader, verbose=0) == b.evaluate(x, y, batch_size=BS, verbose=0)
    # a torch Dataset alone gives single samples: refused with the fix
    with pytest.raises(TypeError, match="DataLoader"):
        b.fit(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), verbose=0)


def test_keras_pydataset_subclass_is_read():
    keras = pytest.importorskip("keras")
    x, y = _data("dense")

    class K(keras.utils.PyDataset):
        def __init__(self, **kw):
            super().__init__(**kw)

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return x[i * BS:(i + 1) * BS], y[i * BS:(i + 1) * BS]

    a = _model("dense")
    a.fit(x, y, batch_size=BS, shuffle=False, verbose=0)
    b = _model("dense")
    b.fit(K(workers=2), shuffle=False, verbose=0)
    _same_weights(a, b)


def test_read_order_matches_keras_epoch_iterator():
    """The oracle is Keras 3 itself: the batch indices a PyDataset is asked for with
    steps_per_epoch < len over several epochs (Keras reads index 0 once more first, to
    build its model symbolically)."""
    keras = pytest.importorskip("keras")
    x, y = _data("dense")

    class K(keras.utils.PyDataset):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.read = []

        def __len__(self):
            return 5

        def __getitem__(self, i):
            self.read.append(i)
            return x[i * BS:(i + 1) * BS], y[i * BS:(i + 1) * BS]

    for spe, epochs in ((3, 3), (2, 4), (None, 2), (5, 2)):
        k = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
        k.compile("sgd", "sparse_categorical_crossentropy")
        kd, fd = K(), K()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hk = k.fit(kd, steps_per_epoch=spe, epochs=epochs, shuffle=False, verbose=0)
            hf = _model("dense").fit(fd, steps_per_epoch=spe, epochs=epochs, shuffle=False,
                                     verbose=0)
        assert kd.read[0] == 0
        assert fd.read == kd.read[1:], (spe, epochs)
        assert len(hf.history["loss"]) == len(hk.history["loss"])


def test_torch_dataloader_with_worker_processes():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset
    x, y = _data("dense")
    a = _model("dense")
    a.fit(x, y, batch_size=BS, shuffle=False, verbose=0)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BS,
                        num_workers=2)
    b = _model("dense")
    b.fit(loader, shuffle=False, verbose=0)
    _same_weights(a, b)


def test_per_step_targets_mask_and_weights_through_a_generator_equal_arrays():
    """Sequence tagging (labels (n, T), per-step sample_weight (n, T)) after
    Embedding(mask_zero=True): the masked per-step loss, metrics and MC predictions of
    generator batches equal the array path's."""
    from fastdrop.layers import BatchNormalization
    rng = np.random.default_rng(4)
    x = rng.integers(1, 12, (N, 7))
    x[:, 5:] = 0
    y = rng.integers(0, 3, (N, 7))
    w = rng.uniform(0.2, 2.0, (N, 7)).astype(np.float32)

    def tagger():
        m = Sequential([Embedding(12, 4, mask_zero=True, input_length=7),
                        LSTM(6, dropout=0.2, return_sequences=True), BatchNormalization(),
                        Dropout(0.2), Dense(3, activation="softmax")], seed=8)
        m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    a, b = tagger(), tagger()
    ha = a.fit(x, y, sample_weight=w, batch_size=BS, epochs=2, shuffle=False, verbose=0,
               validation_data=(x[:32], y[:32]))
    hb = b.fit(Seq(x, y, w), epochs=2, shuffle=False, verbose=0,
               validation_data=_gen(_batches(x[:32], y[:32], bs=32), 2), validation_steps=1)
    _same_weights(a, b)
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history["accuracy"] == hb.history["accuracy"]
    np.testing.assert_allclose(hb.history["val_loss"], ha.history["val_loss"], rtol=1e-6)
    assert a.evaluate(x, y, batch_size=BS, sample_weight=w, verbose=0) == \
        b.evaluate(_gen(_batches(x, y, w)), verbose=0)
    mean, std = a.predict(x, mc_samples=4, seed=2)
    gm, gs = b.predict(_gen(_batches(x, bs=9)), mc_samples=4, seed=2)
    np.testing.assert_array_equal(gm, mean)
    np.testing.assert_array_equal(gs, std)

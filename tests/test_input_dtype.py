"""``Input(shape, dtype=...)`` with Keras 3's dtypes (issue 17 item 5): integer inputs for
Embedding, floats computed in float32, a bad dtype a ValueError naming ``dtype``; config,
fastdrop's format and the Keras reader/writer carry it.  Oracles: the float32 model on
the same (cast) values, and Keras 3 itself on the torch backend where installed."""
import numpy as np
import pytest

from fastdrop.layers import (Dense, Dropout, Embedding, GlobalAveragePooling1D, Input,
                             InputLayer)
from fastdrop.models import Sequential, load_model


def _text_model(dtype, seed=3):
    m = Sequential([Input((6,), dtype=dtype), Embedding(15, 4, mask_zero=True), Dropout(0.3),
                    GlobalAveragePooling1D(), Dense(3, activation="softmax")], seed=seed)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _tokens(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 15, (n, 6))
    x[:, 4:] = 0
    return x, x[:, 0] % 3


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "int16", "uint16"])
def test_int_input_embedding_equals_float_input_in_every_mode(dtype):
    x, y = _tokens()
    a, b = _text_model(None), _text_model(dtype)
    assert b._layers[0].dtype == dtype and a._layers[0].dtype == "float32"
    ha = a.fit(x.astype(np.float32), y, batch_size=8, epochs=2, verbose=0)
    hb = b.fit(x.astype(dtype), y, batch_size=8, epochs=2, verbose=0)
    assert ha.history == hb.history
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(b.predict(x.astype(dtype)), a.predict(x.astype(np.float32)))
    np.testing.assert_array_equal(b.predict(x, mc_samples=4, seed=1)[0],
                                  a.predict(x.astype(np.float32), mc_samples=4, seed=1)[0])
    assert b.evaluate(x, y, verbose=0) == a.evaluate(x, y, verbose=0)


def test_int_input_casts_floats_as_keras_converts_them():
    """Keras converts inputs to the Input's dtype (floats truncate toward zero); the float
    model refuses non-integral token ids."""
    x, _ = _tokens()
    m = _text_model("int32")
    xf = x.astype(np.float32) + 0.75
    np.testing.assert_array_equal(m.predict(xf), m.predict(x))
    np.testing.assert_array_equal(m(xf), m.predict(x))
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.predict(np.full((2, 6), np.nan))
    with pytest.raises(ValueError, match="integer token ids"):
        _text_model(None).predict(xf)
    d = Sequential([Input((3,), dtype="bool"), Dense(2)], seed=0)
    np.testing.assert_array_equal(d.predict(np.array([[0.0, 2.5, -1.0]])),
                                  d.predict(np.array([[0.0, 1.0, 1.0]], np.float32)))


@pytest.mark.parametrize("dtype,want", [(None, "float32"), ("float64", "float64"),
                                        ("float16", "float16"), ("bfloat16", "bfloat16"),
                                        (int, "int32"), ("int", "int32"), (float, "float32"),
                                        (bool, "bool"), (np.int64, "int64"),
                                        (np.dtype("uint8"), "uint8"), (np.bool_, "bool")])
def test_dtype_spellings_as_keras_standardize_dtype(dtype, want):
    assert Input((2,), dtype=dtype).dtype == want


def test_float_inputs_compute_in_float32():
    x = np.random.default_rng(0).normal(size=(5, 3))
    m = Sequential([Input((3,), dtype="float64"), Dense(2)], seed=0)
    ref = Sequential([Input((3,)), Dense(2)], seed=0)
    np.testing.assert_array_equal(m.predict(x), ref.predict(x))
    assert m.predict(x).dtype == np.float32


@pytest.mark.parametrize("bad", ["int33", "float", "string", "complex64", 3, object])
def test_bad_dtype_is_a_value_error_naming_dtype(bad):
    with pytest.raises(ValueError, match="dtype"):
        Input((2,), dtype=bad)


def test_config_and_native_save_carry_the_dtype(tmp_path):
    x, y = _tokens()
    m = _text_model("int64")
    m.fit(x, y, verbose=0)
    cfg = m.get_config()
    assert cfg["layers"][0]["config"]["dtype"] == "int64"
    assert Sequential.from_config(cfg)._layers[0].dtype == "int64"
    m.save(tmp_path / "m.fdm")
    back = load_model(tmp_path / "m.fdm")
    assert back._layers[0].dtype == "int64"
    np.testing.assert_array_equal(back.predict(x + 0.5), m.predict(x))
    old = dict(cfg["layers"][0]["config"])
    old.pop("dtype")                          # a config written before dtype existed
    assert InputLayer.from_config(old).dtype == "float32"


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_keras_files_carry_the_dtype_both_ways(tmp_path, ext):
    pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")
    x, y = _tokens()
    m = _text_model("int32")
    m.fit(x, y, verbose=0)
    path = str(tmp_path / ("m" + ext))
    m.save(path)
    back = load_model(path)
    assert back._layers[0].dtype == "int32"
    km = keras.models.load_model(path, compile=False)
    assert km.inputs[0].dtype == "int32"
    np.testing.assert_allclose(np.asarray(km.predict(x, verbose=0)), m.predict(x), rtol=1e-5,
                               atol=1e-6)
    # Keras's own model with a uint8 input: the reader keeps it
    k = keras.Sequential([keras.Input((4,), dtype="uint8"), keras.layers.Dense(2)])
    kp = str(tmp_path / ("k" + ext))
    k.save(kp)
    f = load_model(kp)
    assert f._layers[0].dtype == "uint8"
    xk = np.array([[0, 3, 200, 255]], np.uint8)
    np.testing.assert_allclose(f.predict(xk), np.asarray(k.predict(xk, verbose=0)), rtol=1e-5,
                               atol=1e-5)

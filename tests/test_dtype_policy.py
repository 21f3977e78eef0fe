"""The dtype policy with Keras's names (fastdrop.mixed_precision, fastdrop.config, the
``dtype=`` argument of layers): semantics, get_config, save/load and the Keras .keras
writer and reader carry it."""
import json

import numpy as np
import pytest

import fastdrop
from fastdrop import mixed_precision
from fastdrop.layers import Dense, Dropout
from fastdrop.models import Sequential

from helpers import blobs


@pytest.fixture(autouse=True)
def _restore():
    pol = mixed_precision.global_policy()
    yield
    mixed_precision.set_global_policy(pol)


# ------------------------------------------------------------------ the policy
def test_policy_names_and_dtypes():
    p = mixed_precision.DTypePolicy("mixed_bfloat16")
    assert (p.name, p.compute_dtype, p.variable_dtype) == ("mixed_bfloat16", "bfloat16",
                                                           "float32")
    q = mixed_precision.Policy("float32")
    assert (q.compute_dtype, q.variable_dtype) == ("float32", "float32")
    assert mixed_precision.DTypePolicy.from_config(p.get_config()) == p
    for bad, word in [("mixed_float16", "float16"), ("bfloat16", "mixed_bfloat16"),
                      ("int8", "must be one of")]:
        with pytest.raises(ValueError, match=word):
            mixed_precision.DTypePolicy(bad)
    with pytest.raises(ValueError, match="dtype"):
        Dense(4, dtype="float16")


def test_global_policy_and_config_spelling():
    assert mixed_precision.global_policy().name == "float32"
    mixed_precision.set_global_policy("mixed_bfloat16")
    assert mixed_precision.global_policy().name == "mixed_bfloat16"
    assert fastdrop.config.dtype_policy().name == "mixed_bfloat16"
    d = Dense(3)                                    # takes the global policy when made
    fastdrop.config.set_dtype_policy("float32")
    e = Dense(3)
    assert (d.dtype_policy.name, d.compute_dtype, d.variable_dtype, d.dtype) == \
        ("mixed_bfloat16", "bfloat16", "float32", "float32")
    assert e.compute_dtype == "float32"
    f = Dense(3, dtype=mixed_precision.DTypePolicy("mixed_bfloat16"))
    g = Dense(3, dtype={"module": "keras", "class_name": "DTypePolicy",
                        "config": {"name": "mixed_bfloat16"}, "registered_name": None})
    assert f.compute_dtype == g.compute_dtype == "bfloat16"
    mixed_precision.set_global_policy(None)
    assert mixed_precision.global_policy().name == "float32"


def _model(policy, seed=0, rate=0.2):
    return Sequential([Dense(32, activation="relu", input_dim=20, dtype=policy),
                       Dropout(rate), Dense(16, activation="relu", dtype=policy),
                       Dense(4, activation="softmax", dtype="float32")], seed=seed)


def test_policy_in_config_save_load_and_keras_file(tmp_path):
    m = _model("mixed_bfloat16")
    m.compile("adam", "sparse_categorical_crossentropy")
    x, y = blobs(64)
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    cfg = m.get_config()
    m2 = Sequential.from_config(cfg)
    assert [l.dtype_policy.name for l in m2.layers] == \
        ["mixed_bfloat16", "float32", "mixed_bfloat16", "float32"]
    assert [l.get_config()["dtype"] for l in m.layers] == \
        [l.dtype_policy.name for l in m.layers]
    p = str(tmp_path / "m.fdm")
    m.save(p)
    m3 = fastdrop.load_model(p)
    assert [l.dtype_policy.name for l in m3.layers] == [l.dtype_policy.name for l in m.layers]
    np.testing.assert_array_equal(m3.predict(x), m.predict(x))
    kp = str(tmp_path / "m.keras")
    m.save(kp)
    import zipfile
    with zipfile.ZipFile(kp) as z:
        kcfg = json.loads(z.read("config.json"))
    dts = [l["config"]["dtype"]["config"]["name"] for l in kcfg["config"]["layers"]
           if l["class_name"] == "Dense"]
    assert dts == ["mixed_bfloat16", "mixed_bfloat16", "float32"]
    m4 = fastdrop.load_model(kp)
    assert [l.dtype_policy.name for l in m4.layers if l.kind == "dense"] == dts
    np.testing.assert_array_equal(m4.predict(x), m.predict(x))


def test_keras_files_carry_the_policy_both_ways(tmp_path):
    """A Keras model made under mixed_bfloat16 loads with that policy per layer; a fastdrop
    model saved as .keras opens in Keras with its layers' policies."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        km = keras.Sequential([keras.Input((8,)), L.Dense(6, activation="relu"),
                               L.Dense(3, dtype="float32")])
    finally:
        keras.config.set_dtype_policy("float32")
    p = str(tmp_path / "k.keras")
    km.save(p)
    m = fastdrop.load_model(p)
    assert [l.dtype_policy.name for l in m.layers] == ["mixed_bfloat16", "float32"]
    x = np.random.default_rng(0).random((5, 8), dtype=np.float32)
    want = np.asarray(km.predict(x, verbose=0), np.float32)
    np.testing.assert_allclose(m.predict(x), want, rtol=0.05, atol=0.05)  # bf16 both sides
    out = str(tmp_path / "f.keras")
    m.save(out)
    back = keras.saving.load_model(out)
    assert [l.dtype_policy.name for l in back.layers] == ["mixed_bfloat16", "float32"]

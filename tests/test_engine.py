"""Engine v2 behaviour through the public API: Keras build semantics, shapes and summary,
modes (TRAIN/INFER/MC), batch-independent MC masks, frozen layers, sample and class
weights against the NumPy reference, weight files, config round trips, pickling."""
import copy
import os
import pickle

import numpy as np
import pytest

import fastdrop
from fastdrop import reference as R
from fastdrop.engine import Context, make_plan
from fastdrop.layers import (Activation, Dense, Dropout, Flatten, GaussianDropout, Input,
                             Reshape)
from fastdrop.models import Sequential

from helpers import blobs, mlp


def test_model_is_built_as_soon_as_its_input_shape_is_known():
    model = Sequential([Dense(64, input_dim=784, activation="relu"), Dropout(0.5),
                        Dense(10, activation="softmax")], seed=0)
    assert model.built
    assert [w.shape for w in model.get_weights()] == [(784, 64), (64,), (64, 10), (10,)]
    assert model.count_params() == 784 * 64 + 64 + 650
    text = model.summary(print_fn=None)
    assert "(None, 64)" in text and "Trainable params: 50,890" in text
    assert "Non-trainable params: 0" in text
    m2 = Sequential(seed=0)
    m2.add(Input((28, 28)))
    m2.add(Flatten())
    assert m2.built and m2.output_shape == (None, 784)
    m2.add(Dense(5))
    assert m2.get_weights()[0].shape == (784, 5)


def test_incremental_build_draws_the_same_weights_as_one_shot_build():
    a = Sequential([Input((12,)), Dense(7), Dense(3)], seed=4)
    b = Sequential(seed=4)
    b.add(Input((12,)))
    b.add(Dense(7))
    w0 = b.get_weights()[0].copy()
    b.add(Dense(3))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(w0, b.get_weights()[0])   # kept on rebuild


def test_unknown_input_shape_builds_from_data_and_says_so_before():
    model = Sequential([Dense(3), Dense(2, activation="softmax")])
    assert not model.built
    with pytest.raises(RuntimeError, match="input shape is unknown"):
        model.get_weights()
    x, _ = blobs(n=10, d=5)
    assert model.predict(x).shape == (10, 2)
    assert model.built and model.input_shape == (None, 5)


def test_per_sample_shape_mismatch_names_both_shapes():
    model = Sequential([Input((784,)), Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match=r"per-sample shape \(28, 28\).*expects \(784,\).*Flatten"):
        model.predict(np.zeros((2, 28, 28), np.float32))
    conv_like = Sequential([Input((28, 28, 1)), Flatten(), Dense(3)])
    with pytest.raises(ValueError, match=r"\(1, 28, 28\).*\(28, 28, 1\).*channels-first"):
        conv_like.predict(np.zeros((2, 1, 28, 28), np.float32))


def test_x_and_y_of_different_lengths_name_both_sizes():
    model = Sequential([Input((4,)), Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="28 samples but x has 2000"):
        model.fit(np.zeros((2000, 4)), np.zeros((28, 2)), verbose=0)


def test_n_d_dense_acts_on_the_last_axis():
    rng = np.random.default_rng(0)
    model = Sequential([Input((5, 3)), Dense(4, activation="relu"), Flatten(), Dense(2)],
                       seed=1)
    assert model.output_shape == (None, 2)
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    w = [a.astype(np.float64) for a in model.get_weights()]
    h = np.maximum(x @ w[0] + w[1], 0).reshape(6, -1)
    np.testing.assert_allclose(model.predict(x), h @ w[2] + w[3], rtol=1e-5, atol=1e-5)
    r = Sequential([Input((6,)), Reshape((2, 3)), Dense(1)], seed=0)
    assert r.output_shape == (None, 2, 1)


def test_callable_model_and_training_mode_pass():
    x, y = blobs(n=64, d=20)
    model = mlp(rate=0.5)
    np.testing.assert_array_equal(model(x), model.predict(x))
    before = model.get_weights()
    a = model(x, training=True)
    assert a.shape == (64, 4) and not np.allclose(a, model.predict(x))
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-5)
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)         # no update


@pytest.mark.parametrize("layers", [
    lambda: [Dense(32, activation="relu", input_dim=20), Dropout(0.5), Dense(16, activation="relu"),
             Dropout(0.3), Dense(4, activation="softmax")],
    lambda: [Dropout(0.2, input_shape=(20,)), Dense(16, activation="relu"),
             GaussianDropout(0.3), Dense(4, activation="softmax")],
    lambda: [Dense(16, activation="relu", input_dim=20, drop_connect=0.3), Dense(4)],
    lambda: [Dense(16, activation="relu", input_dim=20), Dropout(0.4, noise_shape=(None, 1)),
             Dense(4, activation="softmax")],
])
def test_mc_dropout_does_not_depend_on_batching(layers):
    x, _ = blobs(n=600, d=20, seed=3)
    model = Sequential(layers(), seed=2)
    m1, s1 = model.predict(x, mc_samples=8, seed=5, batch_size=37)
    m2, s2 = model.predict(x, mc_samples=8, seed=5, batch_size=500)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(s1, s2)
    # nor on the other samples in the call
    x2 = x.copy()
    x2[:100] = np.random.default_rng(9).standard_normal((100, 20))
    x2[137:] = 0
    m3, s3 = model.predict(x2, mc_samples=8, seed=5, batch_size=64)
    np.testing.assert_array_equal(m3[100:137], m1[100:137])
    np.testing.assert_array_equal(s3[100:137], s1[100:137])
    assert s1.max() > 0


def test_mc_default_chunks_of_a_conv_model_equal_small_batches(monkeypatch):
    """predict(mc_samples=T) without batch_size sizes its chunks itself (by bytes, at least
    predict's 1024 rows): a conv model with BN and SpatialDropout2D gives the same bits as
    explicit small batches and as chunks of one sample."""
    from fastdrop.layers import BatchNormalization, Conv2D, MaxPooling2D, SpatialDropout2D
    from fastdrop.models import mc
    x = np.random.default_rng(4).random((70, 10, 10, 1), dtype=np.float32)
    model = Sequential([Input((10, 10, 1)), Conv2D(8, 3), BatchNormalization(),
                        Activation("relu"), SpatialDropout2D(0.3), MaxPooling2D(2),
                        Flatten(), Dropout(0.5), Dense(3, activation="softmax")], seed=1)
    m1, s1 = model.predict(x, mc_samples=12, seed=7)
    m2, s2 = model.predict(x, mc_samples=12, seed=7, batch_size=9)
    monkeypatch.setattr(mc, "_MC_CHUNK_ROWS", 1)
    monkeypatch.setattr(mc, "_MC_CHUNK_BYTES", 1)
    m3, s3 = model.predict(x, mc_samples=12, seed=7)
    for a, b in ((m1, m2), (s1, s2), (m1, m3), (s1, s3)):
        np.testing.assert_array_equal(a, b)
    assert s1.max() > 0


def test_mc_result_of_a_sample_is_keyed_by_its_index_in_the_call():
    x, _ = blobs(n=50, d=20)
    model = mlp(rate=0.5)
    full, _ = model.predict(x, mc_samples=4, seed=1)
    part, _ = model.predict(x[:20], mc_samples=4, seed=1)
    np.testing.assert_array_equal(full[:20], part)


def test_frozen_layer_stays_bitwise_unchanged_and_counts_as_non_trainable():
    x, y = blobs(n=200, d=20)
    model = mlp(rate=0.2)
    model.compile("adam", "sparse_categorical_crossentropy")
    frozen = model.layers[0]
    frozen.trainable = False
    before = [w.copy() for w in frozen.get_weights()]
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(before, frozen.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "Non-trainable params: 672" in model.summary(print_fn=None)
    # the optimizer state of the frozen range never moved
    lo = 0
    hi = sum(w.size for w in before)
    assert not model.optimizer.state()[:, lo:hi].any()
    frozen.trainable = True
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(before[0], frozen.get_weights()[0])


def test_sample_and_class_weights_match_the_reference():
    x, y = blobs(n=24, d=7, classes=3, seed=1)
    model = mlp(d=7, classes=3, hidden=(9,), rate=0.0, seed=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    sw = np.linspace(0.1, 2.0, 24)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    weights = [w.astype(np.float64) for w in model.get_weights()]
    for kw, w in ((dict(sample_weight=sw), sw),
                  (dict(class_weight=cw), np.array([cw[int(c)] for c in y])),
                  (dict(sample_weight=sw, class_weight=cw),
                   sw * np.array([cw[int(c)] for c in y]))):
        ref_loss, ref_grads = R.mlp_loss_and_grads(weights, x, y, [True], sample_weight=w)
        if "class_weight" in kw:
            res = model.train_on_batch(x, y, return_dict=True, **kw)
            model.set_weights(weights)
            assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
        else:
            got = model.loss_and_gradients(x, y, sample_weight=w)
            assert got["loss"] == pytest.approx(ref_loss, rel=1e-5)
            for g, r in zip(got["gradients"], ref_grads):
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
    assert model.evaluate(x, y, sample_weight=sw, verbose=0) == pytest.approx(
        R.mlp_loss_and_grads(weights, x, y, [True], sample_weight=sw)[0], rel=1e-5)


def test_weighted_fit_and_validation_weights_run():
    x, y = blobs(n=200, d=20)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, sample_weight=np.ones(200), class_weight={0: 2.0}, epochs=2,
                  batch_size=32, verbose=0,
                  validation_data=(x[:50], y[:50], np.ones(50)))
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        model.fit(x, y, sample_weight=np.ones(3), verbose=0)


def test_metrics_resolve_from_the_loss():
    x, y = blobs(n=100, d=20, classes=2)
    reg = Sequential([Input((20,)), Dense(1)], seed=0)
    reg.compile("adam", "mse", metrics=["accuracy", "mae"])
    h = reg.fit(x, y.astype(np.float32), epochs=2, verbose=0)
    assert h.history["accuracy"][-1] < 1.0 and "mae" in h.history
    with pytest.raises(ValueError, match="metrics"):
        reg.compile("adam", "mse", metrics=["f1"])


def test_evaluate_honours_batch_size_and_returns_keras_shapes():
    x, y = blobs(n=90, d=20)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    a = model.evaluate(x, y, batch_size=7, verbose=0)
    b = model.evaluate(x, y, batch_size=90, verbose=0)
    assert a[0] == pytest.approx(b[0], rel=1e-6) and a[1] == b[1]
    assert set(model.evaluate(x, y, return_dict=True, verbose=0)) == {"loss", "accuracy"}


def test_predict_on_empty_input_returns_an_empty_batch():
    model = mlp()
    out = model.predict(np.zeros((0, 20), np.float32))
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_batch_api():
    x, y = blobs(n=64, d=20)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(x, y)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert model.test_on_batch(x, y)[0] == pytest.approx(model.evaluate(x, y, verbose=0)[0])
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict(x))


def test_get_layer_and_layer_weights():
    model = mlp()
    d = model.get_layer(index=0)
    assert model.get_layer(name=d.name) is d
    w = d.get_weights()
    d.set_weights([np.zeros_like(a) for a in w])
    assert not model.get_weights()[0].any()
    with pytest.raises(ValueError, match="no layer named"):
        model.get_layer("nope")
    with pytest.raises(ValueError, match="shape"):
        d.set_weights([np.zeros((2, 2)), w[1]])


def test_save_weights_from_config_load_weights_round_trip(tmp_path):
    x, y = blobs(n=100, d=20)
    model = mlp(rate=0.3)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "w.weights"
    model.save_weights(path)
    clone = Sequential.from_config(model.get_config())
    clone.load_weights(path)
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    other = mlp(hidden=(8,))
    with pytest.raises(ValueError, match="do not match"):
        other.load_weights(path)


def test_pickle_and_deepcopy_predict_identically():
    x, y = blobs(n=100, d=20)
    model = mlp(rate=0.3)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(clone.predict(x), model.predict(x))
        # training goes on identically too
        a = copy.deepcopy(model)
        a.fit(x, y, epochs=1, verbose=0)
        clone.fit(x, y, epochs=1, verbose=0)
        np.testing.assert_array_equal(a.get_weights()[0], clone.get_weights()[0])


def test_callable_initializer_is_refused_in_a_config():
    ones = lambda s, rng: np.ones(s, np.float32)  # noqa: E731
    model = Sequential([Input((3,)), Dense(2, kernel_initializer=ones)])
    assert np.all(model.get_weights()[0] == 1)
    with pytest.raises(ValueError, match="kernel_initializer is a callable"):
        model.get_config()
    from fastdrop.layers import LSTM, BatchNormalization, Conv2D, Embedding
    for layer in (Conv2D(2, 3, kernel_initializer=ones), BatchNormalization(gamma_initializer=ones),
                  LSTM(3, recurrent_initializer=ones), Embedding(5, 2, embeddings_initializer=ones)):
        with pytest.raises(ValueError, match="is a callable"):
            layer.get_config()


def test_saved_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        model = mlp()
        model.save(tmp_path / "m.fdm")
        assert (os.stat(tmp_path / "m.fdm").st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_plan_fuses_dense_activation_and_dropout():
    from fastdrop.engine.stages.core import DenseStage
    from fastdrop.engine.stages.noise import DropoutStage
    model = Sequential([Input((8,)), Dense(6), Activation("relu"), Dropout(0.5),
                        Dense(4, activation="relu"), Dropout(0.2, noise_shape=(None, 1)),
                        Dense(2, activation="softmax")])
    kinds = [type(s).__name__ for s in model._stages]
    assert kinds == ["DenseStage", "DenseStage", "DropoutStage", "DenseStage"]
    assert model._stages[0].relu and model._stages[0].dropout is not None


def test_context_modes():
    with pytest.raises(ValueError, match="mode"):
        Context("eval", 3)
    assert Context("mc", 6, passes=3).samples == 2


# ------------------------------------------------- activations, heads, from_logits
# relu: finite differences in test_models (against an independent NumPy model)
ACTS = ["tanh", "sigmoid", "softplus", "elu", "gelu", "silu", "leaky_relu", "linear", "selu"]


@pytest.mark.parametrize("act", ACTS)
def test_every_activation_trains_with_finite_difference_gradients(act):
    from helpers import fd_check
    x, y = blobs(n=24, d=6, classes=3, seed=2)
    model = Sequential([Input((6,)), Dense(7, activation=act), Dense(5),
                        Activation(act), Dense(3, activation="softmax")], seed=1)
    model.compile("sgd", "sparse_categorical_crossentropy")
    fd_check(model, x, y, eps=1e-4 if act in ("relu", "leaky_relu", "selu") else 1e-2,
             rtol=3e-2, atol=2e-3)
    # and the forward pass equals the NumPy formula
    w = [a.astype(np.float64) for a in model.get_weights()]
    f = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "softplus": lambda z: np.logaddexp(0, z), "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
         "gelu": lambda z: 0.5 * z * (1 + __import__("scipy.special").special.erf(z / np.sqrt(2))),
         "silu": lambda z: z / (1 + np.exp(-z)), "leaky_relu": lambda z: np.where(z > 0, z, 0.2 * z),
         "linear": lambda z: z, "selu": R.selu, "relu": lambda z: np.maximum(z, 0)}[act]
    h = f(f(x @ w[0] + w[1]) @ w[2] + w[3]) @ w[4] + w[5]
    np.testing.assert_allclose(model.predict(x), R.softmax(h), rtol=1e-4, atol=1e-5)


def test_binary_crossentropy_sigmoid_head_equals_from_logits_and_reference():
    x, y = blobs(n=40, d=6, classes=2, seed=4)
    a = Sequential([Input((6,)), Dense(5, activation="tanh"), Dense(1, activation="sigmoid")],
                   seed=3)
    b = Sequential([Input((6,)), Dense(5, activation="tanh"), Dense(1)], seed=3)
    a.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    from fastdrop.losses import BinaryCrossentropy
    b.compile("adam", BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    ra, rb = a.loss_and_gradients(x, y), b.loss_and_gradients(x, y)
    w = [v.astype(np.float64) for v in a.get_weights()]
    z = (np.tanh(x @ w[0] + w[1]) @ w[2] + w[3])[:, 0]
    ref = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    assert ra["loss"] == pytest.approx(ref, rel=1e-5)
    assert rb["loss"] == pytest.approx(ref, rel=1e-5)
    for ga, gb in zip(ra["gradients"], rb["gradients"]):
        np.testing.assert_allclose(ga, gb, rtol=1e-6, atol=1e-7)
    p = a.predict(x)[:, 0]
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.predict(x)[:, 0], z, rtol=1e-5, atol=1e-5)   # logits
    h = a.fit(x, y, epochs=30, batch_size=8, verbose=0)
    assert h.history["accuracy"][-1] > 0.9


def test_categorical_from_logits_equals_fused_softmax():
    x, y = blobs(n=30, d=6, classes=3, seed=5)
    a = Sequential([Input((6,)), Dense(3, activation="softmax")], seed=1)
    b = Sequential([Input((6,)), Dense(3)], seed=1)
    from fastdrop.losses import SparseCategoricalCrossentropy
    a.compile("sgd", "sparse_categorical_crossentropy")
    b.compile("sgd", SparseCategoricalCrossentropy(from_logits=True))
    assert a.loss_and_gradients(x, y)["loss"] == b.loss_and_gradients(x, y)["loss"]
    with pytest.raises(ValueError, match="from_logits=True"):
        a.compile("sgd", SparseCategoricalCrossentropy(from_logits=True))
        a.fit(x, y, verbose=0)

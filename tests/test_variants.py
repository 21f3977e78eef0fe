"""Dropout variants: noise_shape, GaussianDropout, AlphaDropout (+ SELU, lecun_normal),
DropConnect — kernels against the NumPy reference, statistics with stated tolerances,
and whole-model gradients against finite differences with the noise held fixed."""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core, reference as R
from fastdrop.layers import AlphaDropout, Dense, Dropout, GaussianDropout
from fastdrop.engine import Context
from fastdrop.models import Sequential

from helpers import build_layer, fd_check, run_stage


def data(n=24, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


# ------------------------------------------------------------------- kernels
@pytest.mark.parametrize("n", [1, 2, 4095, 4096, 4097, 20001])
def test_gaussian_noise_matches_reference(n):
    out = np.empty(n, np.float32)
    _core.gaussian_noise(out, 11, 0.5)
    # Box–Muller in double with libm vs NumPy: equal to float32 rounding
    np.testing.assert_allclose(out, R.gaussian_noise(n, 11, 0.5), rtol=0, atol=1e-6)


def test_gaussian_noise_statistics_and_thread_invariance(threads):
    n = 1 << 20
    res = []
    for t in (1, 2):
        threads(t)
        out = np.empty(n, np.float32)
        _core.gaussian_noise(out, 3, 1.0)
        res.append(out)
    np.testing.assert_array_equal(res[0], res[1])
    z = res[0].astype(np.float64) - 1.0
    # mean within 5 standard errors; variance within 1%
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert z.var() == pytest.approx(1.0, rel=0.01)


def test_selu_matches_reference():
    x = np.linspace(-10, 10, 1001, dtype=np.float32)
    y = np.empty_like(x)
    _core.selu(x, y)
    np.testing.assert_allclose(y, R.selu(x), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------- layers
def test_gaussian_dropout_layer_statistics():
    x = np.ones((512, 256), np.float32)
    layer = build_layer(GaussianDropout(0.3), (256,))
    stage, ctx, y = run_stage(layer.make_stage(), x, "train")
    std = np.sqrt(0.3 / 0.7)
    assert y.mean() == pytest.approx(1.0, abs=5 * std / np.sqrt(y.size))
    assert y.std() == pytest.approx(std, rel=0.02)
    assert stage.forward(Context("infer", 512), x) is x      # identity at inference


def test_alpha_dropout_keeps_selu_moments():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 512)).astype(np.float32)    # SELU's fixed point: N(0, 1)
    layer = build_layer(AlphaDropout(0.2), (512,))
    stage, ctx, y = run_stage(layer.make_stage(), x, "train")
    y = y.astype(np.float64)
    assert y.mean() == pytest.approx(0.0, abs=0.01)
    assert y.var() == pytest.approx(1.0, abs=0.02)
    kept = stage.noise_masks(1024)[layer.name]
    assert kept.mean() == pytest.approx(0.8, abs=5 * np.sqrt(0.16 / x.size))


@pytest.mark.parametrize("noise_shape,axis", [((1, 40), 0), ((None, 1), 1)])
def test_dropout_noise_shape_shares_mask(noise_shape, axis):
    x = np.ones((64, 40), np.float32)
    layer = build_layer(Dropout(0.5, noise_shape=noise_shape), (40,))
    _, _, y = run_stage(layer.make_stage(), x, "train", seed=1)
    kept = y != 0
    # the mask is constant along the shared axis
    assert np.all(kept == kept.take([0], axis=axis))
    assert 0 < kept.mean() < 1
    np.testing.assert_array_equal(y[kept], 2.0)


def test_dropout_noise_shape_on_images_drops_whole_channels():
    x = np.ones((16, 5, 6, 8), np.float32)
    layer = build_layer(Dropout(0.5, noise_shape=(None, 1, 1, 8)), (5, 6, 8))
    _, _, y = run_stage(layer.make_stage(), x, "train", seed=3)
    kept = y != 0
    assert np.all(kept == kept[:, :1, :1, :])
    assert 0 < kept.mean() < 1


def test_drop_connect_masks_weights_in_training_only():
    x, y = data(n=8, d=6)
    model = Sequential([Dense(5, activation="relu", input_dim=6, drop_connect=0.5),
                        Dense(3, activation="softmax")], seed=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    res = model.loss_and_gradients(x, y, step=0)
    dense = model.layers[0]
    kept = res["masks"][dense.name + "/kernel"]
    assert 0 < kept.mean() < 1
    w = model.get_weights()
    # the training forward used the masked kernel
    h = model(x, training=True)
    wm = np.where(kept, w[0] * 2.0, 0)
    z = np.maximum(x @ wm + w[1], 0) @ w[2] + w[3]
    np.testing.assert_allclose(h, R.softmax(z), rtol=1e-4, atol=1e-6)
    # inference uses the full kernel
    z = np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3]
    np.testing.assert_allclose(model.predict(x), R.softmax(z), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------- gradients (noise fixed)
@pytest.mark.parametrize("build", [
    lambda: [Dense(7, activation="selu", input_dim=6, kernel_initializer="lecun_normal"),
             AlphaDropout(0.3), Dense(3, activation="softmax")],
    lambda: [GaussianDropout(0.4), Dense(7, activation="selu", input_dim=6),
             GaussianDropout(0.2), Dense(3, activation="softmax")],
    lambda: [Dense(7, activation="selu", input_dim=6, drop_connect=0.3),
             Dense(3, activation="softmax", drop_connect=0.2)],
    lambda: [Dropout(0.3, noise_shape=(1, 6), input_shape=(6,)), Dense(7, activation="selu"),
             Dropout(0.5, noise_shape=(None, 1)), Dense(3, activation="softmax")],
])
def test_variant_gradients_match_finite_differences(build):
    x, y = data()
    model = Sequential(build(), seed=5)
    model.compile("sgd", "sparse_categorical_crossentropy")
    fd_check(model, x, y)


@pytest.mark.parametrize("layers", [
    lambda: [Dense(32, activation="selu", input_dim=10, kernel_initializer="lecun_normal"),
             AlphaDropout(0.1), Dense(4, activation="softmax")],
    lambda: [Dense(32, activation="relu", input_dim=10, drop_connect=0.3), Dropout(0.2),
             Dense(4, activation="softmax")],
    lambda: [GaussianDropout(0.2), Dense(32, activation="relu", input_dim=10),
             Dense(4, activation="softmax")],
])
def test_variants_train_reproducibly_and_save(layers, tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 10))
    yy = rng.integers(0, 4, 400)
    xx = (centers[yy] + rng.normal(size=(400, 10))).astype(np.float32)
    ws = []
    for _ in range(2):
        model = Sequential(layers(), seed=9)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(xx, yy, epochs=8, verbose=0)
        ws.append(model.get_weights())
    assert h.history["accuracy"][-1] > 0.85
    for a, b in zip(*ws):
        np.testing.assert_array_equal(a, b)
    model.save(tmp_path / "v.fdm")
    loaded = fastdrop.load_model(tmp_path / "v.fdm")
    np.testing.assert_array_equal(loaded.predict(xx), model.predict(xx))

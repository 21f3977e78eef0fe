"""Dropout variants: noise_shape, GaussianDropout, AlphaDropout (+ SELU, lecun_normal),
DropConnect — kernels against the NumPy reference, statistics with stated tolerances,
and whole-model gradients against finite differences with the noise held fixed."""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core, reference as R
from fastdrop.layers import AlphaDropout, Dense, Dropout, GaussianDropout
from fastdrop.models import Sequential


def data(n=24, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


def flat_grads(model):
    return model._grads.astype(np.float64).copy()


def fd_check(model, x, y, step=3, eps=3e-3, rtol=3e-2, atol=2e-3, max_params=60):
    """Central differences of the model's own loss (noise fixed by the step) vs its
    analytic gradient, on up to max_params parameters spread over the block."""
    model._ensure_capacity(x.shape[0])
    m = x.shape[0]
    model._loss_and_grads(x, y, m, step)
    g = flat_grads(model)
    idx = np.linspace(0, model._params.size - 1, min(max_params, model._params.size)).astype(int)
    for i in idx:
        old = model._params[i]
        model._params[i] = old + eps
        lp = model._loss_and_grads(x, y, m, step)[0] / m
        model._params[i] = old - eps
        lm = model._loss_and_grads(x, y, m, step)[0] / m
        model._params[i] = old
        num = (float(lp) - float(lm)) / (2 * eps)
        assert g[i] == pytest.approx(num, rel=rtol, abs=atol), f"parameter {i}"


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
    model = Sequential([GaussianDropout(0.3), Dense(2, input_dim=256)], seed=0)
    model.build()
    model._ensure_capacity(512)
    y = model._stages[0].forward(x, 512, True, 0)
    std = np.sqrt(0.3 / 0.7)
    assert y.mean() == pytest.approx(1.0, abs=5 * std / np.sqrt(y.size))
    assert y.std() == pytest.approx(std, rel=0.02)
    assert model._stages[0].forward(x, 512, False, 0) is x      # identity at inference


def test_alpha_dropout_keeps_selu_moments():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 512)).astype(np.float32)    # SELU's fixed point: N(0, 1)
    model = Sequential([AlphaDropout(0.2), Dense(2, input_dim=512)], seed=0)
    model.build()
    model._ensure_capacity(1024)
    y = model._stages[0].forward(x, 1024, True, 0).astype(np.float64)
    assert y.mean() == pytest.approx(0.0, abs=0.01)
    assert y.var() == pytest.approx(1.0, abs=0.02)
    kept = np.unpackbits(model._stages[0]._mask, count=x.size, bitorder="little")
    assert kept.mean() == pytest.approx(0.8, abs=5 * np.sqrt(0.16 / x.size))


@pytest.mark.parametrize("noise_shape,axis", [((1, 40), 0), ((None, 1), 1)])
def test_dropout_noise_shape_shares_mask(noise_shape, axis):
    x = np.ones((64, 40), np.float32)
    model = Sequential([Dropout(0.5, noise_shape=noise_shape), Dense(2, input_dim=40)], seed=1)
    model.build()
    model._ensure_capacity(64)
    y = model._stages[0].forward(x, 64, True, 0)
    kept = y != 0
    # the mask is constant along the shared axis
    assert np.all(kept == kept.take([0], axis=axis))
    assert 0 < kept.mean() < 1
    np.testing.assert_array_equal(y[kept], 2.0)


def test_drop_connect_masks_weights_in_training_only():
    x, y = data(n=8, d=6)
    model = Sequential([Dense(5, activation="relu", input_dim=6, drop_connect=0.5),
                        Dense(3, activation="softmax")], seed=2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.build()
    model._ensure_capacity(8)
    st = model._stages[0]
    st.forward(x, 8, True, 0)
    kept = np.unpackbits(st._wmask, count=30, bitorder="little").reshape(6, 5).astype(bool)
    np.testing.assert_array_equal(st.wm, np.where(kept, model.layers[0].kernel * 2.0, 0))
    h = st.forward(x, 8, False, 0)
    w = model.get_weights()
    np.testing.assert_allclose(h, np.maximum(x @ w[0] + w[1], 0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------- gradients (noise fixed)
@pytest.mark.parametrize("build", [
    lambda: [Dense(7, activation="selu", input_dim=6, kernel_initializer="lecun_normal"),
             AlphaDropout(0.3), Dense(3, activation="softmax")],
    lambda: [GaussianDropout(0.4), Dense(7, activation="selu", input_dim=6),
             GaussianDropout(0.2), Dense(3, activation="softmax")],
    lambda: [Dense(7, activation="selu", input_dim=6, drop_connect=0.3),
             Dense(3, activation="softmax", drop_connect=0.2)],
    lambda: [Dropout(0.3, noise_shape=(1, 6)), Dense(7, activation="selu", input_dim=6),
             Dropout(0.5, noise_shape=(None, 1)), Dense(3, activation="softmax")],
])
def test_variant_gradients_match_finite_differences(build):
    x, y = data()
    model = Sequential(build(), seed=5)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.build()
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

"""Activations on the last axis of tensors of any rank, after every layer that takes one
(Dense, Conv2D, Activation and the ReLU / LeakyReLU / ELU / Softmax layers), in TRAIN,
INFER and MC: row-wise kernels (softmax, log_softmax, sparsemax, glu) against the float64
NumPy reference and finite differences; models against the reference and finite
differences of their own loss; get_config / save / load and the Keras reader / writer;
Keras 3 (torch backend) on the same weights."""
import os

import numpy as np
import pytest

from fastdrop import _core
from fastdrop.engine import activations as A
from fastdrop.layers import (ELU, Activation, Conv2D, Dense, Dropout, Flatten, Input,
                             LeakyReLU, ReLU, Softmax)
from fastdrop.models import Sequential, load_model
from fastdrop.reference import activations as RA

ROWS = ("softmax", "log_softmax", "sparsemax", "glu")
#: every Keras activation by name (threshold needs its arguments: its own tests)
ALL = tuple(n for n in A.KERAS_PARAMS if n != "threshold") + ("swish", "hard_swish",
                                                              "gelu_tanh")


def _ref(name, x, params=None):
    """Float64 reference of activation `name` with Keras arguments on the last axis."""
    fn = A.get(name, params)
    if fn is None:
        return np.asarray(x, np.float64)
    if fn.rows:
        return RA.rows_forward(fn.kernel, x)
    if fn.kernel == "selu":
        xd = np.asarray(x, np.float64)
        a, s = 1.6732632423543772, 1.0507009873554805
        return s * np.where(xd > 0, xd, a * np.expm1(np.minimum(xd, 0)))
    return RA.forward(fn.kernel, x, fn.kparams)


# ------------------------------------------------------------- row-wise kernels
@pytest.mark.parametrize("name", ROWS)
@pytest.mark.parametrize("shape", [(1, 2), (7, 6), (33, 10), (4, 1000), (3, 5, 8)])
def test_rows_forward_backward_match_reference(isa, name, shape):
    if name != "glu" and shape[-1] == 2 and shape[0] == 1:
        shape = (1, 3)
    rng = np.random.default_rng(hash((name, shape)) % 2**32)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    c = shape[-1]
    co = c // 2 if name == "glu" else c
    x2 = x.reshape(-1, c)
    y = np.empty((x2.shape[0], co), np.float32)
    _core.act_rows_forward(name, x2, y)
    np.testing.assert_allclose(y, RA.rows_forward(name, x2), rtol=2e-6, atol=2e-7)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = np.empty_like(x2)
    _core.act_rows_backward(name, g, x2, y, dx)
    want = RA.rows_vjp(name, g, x2)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=2e-6 * (1 + np.abs(want).max()))


@pytest.mark.parametrize("name", ROWS)
def test_rows_backward_finite_differences(name):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 8)) * 2
    g = rng.standard_normal((5, 4 if name == "glu" else 8))

    def f(v):
        v32 = v.astype(np.float32)
        out = np.empty(g.shape, np.float32)
        _core.act_rows_forward(name, v32, out)
        return (out.astype(np.float64) * g).sum()

    x32 = x.astype(np.float32)
    y = np.empty(g.shape, np.float32)
    _core.act_rows_forward(name, x32, y)
    dx = np.empty_like(x32)
    _core.act_rows_backward(name, g.astype(np.float32), x32, y, dx)
    h = 1e-2
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            e = np.zeros_like(x)
            e[i, j] = h
            num = (f(x + e) - f(x - e)) / (2 * h)
            assert dx[i, j] == pytest.approx(num, rel=3e-2, abs=3e-3), (name, i, j)


def test_rows_special_and_in_place():
    x = np.array([[0.0, 0.0, 0.0, 0.0], [1e30, 0.0, -1e30, 5.0], [-3.0, -3.0, 10.0, 2.0]],
                 np.float32)
    for name in ("softmax", "log_softmax", "sparsemax"):
        if name == "sparsemax":          # 1e30 - tau has no float precision left
            x = np.where(np.abs(x) > 1e6, np.sign(x) * 30, x).astype(np.float32)
        y = np.empty_like(x)
        _core.act_rows_forward(name, x, y)
        xi = x.copy()
        _core.act_rows_forward(name, xi, xi)           # in place: the same result
        assert np.array_equal(xi, y), name
        np.testing.assert_allclose(y, RA.rows_forward(name, x.astype(np.float64)),
                                   rtol=1e-6, atol=1e-7)
    y = np.empty_like(x)
    _core.act_rows_forward("sparsemax", x, y)
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-6)
    assert (y >= 0).all()


def test_rows_thread_invariant(threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4001, 37)).astype(np.float32)
    g = rng.standard_normal((4001, 37)).astype(np.float32)
    for name in ROWS:
        res = []
        for t in (1, 2):
            threads(t)
            xx = x[:, :36] if name == "glu" else x
            xx = np.ascontiguousarray(xx)
            co = 18 if name == "glu" else 37
            y = np.empty((4001, co), np.float32)
            _core.act_rows_forward(name, xx, y)
            dx = np.empty_like(xx)
            _core.act_rows_backward(name, np.ascontiguousarray(g[:, :co]), xx, y, dx)
            res.append((y, dx))
        assert np.array_equal(res[0][0], res[1][0]) and np.array_equal(res[0][1], res[1][1])


def test_rows_bad_arguments():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="even"):
        _core.act_rows_forward("glu", x, np.empty((2, 1), np.float32))
    with pytest.raises(ValueError, match="unknown row-wise activation"):
        _core.act_rows_forward("relu", x, x)
    with pytest.raises(ValueError, match="out has shape"):
        _core.act_rows_forward("softmax", x, np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match="needs its output y"):
        _core.act_rows_backward("softmax", x, None, None, np.empty_like(x))


# ------------------------------------------------------------------ registry
def test_every_keras_activation_is_known():
    import inspect
    for name in ALL:
        assert A.canonical(name) is not None, name
    # the Keras 3 list (keras/src/activations/__init__.py ALL_OBJECTS_DICT)
    keras_names = ["relu", "leaky_relu", "relu6", "softmax", "celu", "elu", "selu",
                   "softplus", "softsign", "squareplus", "soft_shrink", "sparse_plus",
                   "silu", "gelu", "glu", "tanh", "tanh_shrink", "threshold", "sigmoid",
                   "sparse_sigmoid", "exponential", "hard_sigmoid", "hard_silu", "hard_tanh",
                   "hard_shrink", "linear", "mish", "log_softmax", "log_sigmoid", "sparsemax",
                   "swish", "hard_swish"]
    assert all(A.canonical(n) is not None for n in keras_names)
    assert inspect.isclass(A.Act)


def test_bad_activation_arguments():
    with pytest.raises(TypeError, match="alpha"):
        Activation("relu", alpha=1.0)
    with pytest.raises(ValueError, match="takes no argument 'b'"):
        Activation("relu", activation_params={"b": 1.0})
    with pytest.raises(ValueError, match="needs threshold= and default_value="):
        Activation("threshold")
    with pytest.raises(ValueError, match="threshold.*needs its threshold"):
        Dense(3, activation="threshold")
    with pytest.raises(ValueError, match="axis must be -1"):
        Activation("softmax", axis=1)
    with pytest.raises(ValueError, match="must be even"):
        Dense(5, activation="glu")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        Activation("celu", alpha=0.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        Conv2D(2, 3, activation="nope")


# ------------------------------------------------- models: N-D, every layer, modes
def _loss_model(layers, seed=0):
    m = Sequential(layers + [Flatten(), Dense(3)], seed=seed)
    m.compile(optimizer="sgd", loss="mse")
    return m


def _fd_check(model, x, y, n_params=40, rtol=3e-2, atol=3e-3, eps=2e-3):
    """Central differences of the model's loss against its gradients (float64 weights
    perturbed, float32 forward)."""
    res = model.loss_and_gradients(x, y, step=0)
    g = np.concatenate([a.ravel() for a in res["gradients"]]).astype(np.float64)
    ws = model.get_weights()
    sizes = [w.size for w in ws]
    flat = np.concatenate([w.ravel() for w in ws]).astype(np.float64)

    def loss_at(v):
        parts = np.split(v, np.cumsum(sizes)[:-1])
        model.set_weights([p.reshape(w.shape) for p, w in zip(parts, ws)])
        return float(model.loss_and_gradients(x, y, step=0)["loss"])

    bad = []
    for i in np.linspace(0, flat.size - 1, min(n_params, flat.size)).astype(int):
        v = flat.copy()
        v[i] += eps
        lp = loss_at(v)
        v[i] -= 2 * eps
        lm = loss_at(v)
        num = (lp - lm) / (2 * eps)
        if abs(g[i] - num) > atol + rtol * abs(num):
            bad.append((i, g[i], num))
    loss_at(flat)
    assert len(bad) <= 1, bad       # one kink crossed by the perturbation at most


SMOOTH_ND = [n for n in ALL if n not in (
    "relu", "relu6", "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "soft_shrink", "hard_shrink", "sparse_plus", "sparse_sigmoid", "linear", "sparsemax",
    "elu", "selu")]


@pytest.mark.parametrize("name", ALL)
def test_dense_and_activation_on_3d_input_match_reference(name):
    """Dense(activation=name) and Dense + Activation(name) on (n, T, C): the activation on
    the last axis (each step its own row), as INFER predict and the TRAIN forward."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    for layers in ([Input((4, 3)), Dense(6, activation=name)],
                   [Input((4, 3)), Dense(6), Activation(name)]):
        m = Sequential(layers + [Activation("linear")], seed=1)
        m.build()
        w, b = m.layers[0].get_weights()
        b[:] = rng.standard_normal(6)
        m.layers[0].set_weights([w, b])
        want = _ref(name, x.astype(np.float64) @ w + b)
        got = m.predict(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-6)
        # TRAIN forward (the stages of a training step) gives the same values
        from fastdrop.engine import Context
        from fastdrop.engine.context import TRAIN
        m._ensure(x.shape[1:], len(x))
        h = m._forward(Context(TRAIN, len(x), step=0, seed=0), x)
        np.testing.assert_allclose(h, want, rtol=3e-5, atol=3e-6)


@pytest.mark.parametrize("name", SMOOTH_ND + ["relu", "elu", "sparsemax", "hard_silu"])
def test_dense_3d_gradients_finite_differences(name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    y = rng.standard_normal((6, 3)).astype(np.float32)
    m = _loss_model([Input((4, 3)), Dense(6, activation=name)])
    _fd_check(m, x, y)
    if name == "exponential":      # exp of exp: central differences are too coarse
        return
    m = _loss_model([Input((4, 3)), Dense(6), Activation(name), Dense(4, activation=name)])
    _fd_check(m, x, y)


@pytest.mark.parametrize("name", ["softmax", "gelu", "glu", "log_softmax", "sparsemax",
                                  "silu", "elu", "tanh", "mish", "hard_silu", "celu"])
def test_conv2d_any_activation(name):
    """Conv2D(activation=name) on the channel axis (the last one) against the reference
    conv, and its gradients against finite differences."""
    from fastdrop.reference import conv as RC
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 5, 2)).astype(np.float32)
    m = Sequential([Input((6, 5, 2)), Conv2D(4, 3, padding="same", activation=name),
                    Activation("linear")], seed=0)
    m.build()
    k, b = m.layers[0].get_weights()
    b[:] = rng.standard_normal(4)
    m.layers[0].set_weights([k, b])
    z = RC.conv2d(x.astype(np.float64), k.astype(np.float64), b.astype(np.float64),
                  (1, 1), "same")
    np.testing.assert_allclose(m.predict(x), _ref(name, z), rtol=3e-5, atol=3e-6)
    y = rng.standard_normal((3, 3)).astype(np.float32)
    mm = _loss_model([Input((6, 5, 2)), Conv2D(4, 3, padding="same", activation=name)])
    _fd_check(mm, x, y)


def test_conv2d_activation_then_dropout_and_relu_layers():
    """A conv with its own (non-relu) activation is not fused with a following
    Activation('relu') / Dropout (the order matters); a ReLU(max_value) layer is not a
    plain relu."""
    from fastdrop.engine.stages.conv import ConvStage
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5, 5, 1)).astype(np.float32)
    m = Sequential([Input((5, 5, 1)), Conv2D(3, 3, activation="tanh"), Activation("relu"),
                    Activation("linear")], seed=0)
    k, b = [w.astype(np.float64) for w in m.get_weights()[:2]]
    out = m.predict(x)
    assert (out >= 0).all() and (out <= 1).all()
    m2 = Sequential([Input((5, 5, 1)), Conv2D(3, 3), ReLU(max_value=0.5),
                     Activation("linear")], seed=0)
    m2.set_weights(m.get_weights())
    out2 = m2.predict(x)
    assert out2.max() <= 0.5 and out2.max() > 0.4
    assert not any(isinstance(s, ConvStage) and s.relu for s in m2._stages)


def test_modes_train_infer_mc_last_axis():
    """Softmax / sparsemax as hidden activations on (n, T, C) after Dropout: every step
    is a distribution in TRAIN, INFER and each MC pass (so the MC mean too)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 5, 4)).astype(np.float32)
    for name in ("softmax", "sparsemax"):
        m = Sequential([Input((5, 4)), Dropout(0.3), Dense(6, activation=name),
                        Activation("linear")], seed=3)
        np.testing.assert_allclose(m.predict(x).sum(-1), 1, rtol=1e-5)
        mean, std = m.predict(x, mc_samples=8, seed=1)
        assert mean.shape == (7, 5, 6)
        np.testing.assert_allclose(mean.sum(-1), 1, rtol=1e-5)
        assert std.max() > 0
        # MC does not depend on the batch size
        mean2, _ = m.predict(x, mc_samples=8, seed=1, batch_size=3)
        np.testing.assert_allclose(mean2, mean, rtol=1e-6, atol=1e-7)
        from fastdrop.engine import Context
        from fastdrop.engine.context import TRAIN
        m._ensure(x.shape[1:], len(x))
        h = m._forward(Context(TRAIN, len(x), step=0, seed=0), x)
        np.testing.assert_allclose(h.sum(-1), 1, rtol=1e-5)


def test_training_with_new_activations_decreases_loss():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 6, 3)).astype(np.float32)
    y = np.tanh(x.sum(1)).astype(np.float32)
    for name in ("log_softmax", "glu", "squareplus", "celu", "softmax", "hard_silu"):
        m = Sequential([Input((6, 3)), Dense(8, activation=name), Flatten(), Dense(3)],
                       seed=0)
        m.compile(optimizer="adam", loss="mse")
        h = m.fit(x, y, epochs=15, batch_size=16, verbose=0)
        loss = h.history["loss"]
        assert loss[-1] < loss[0] and np.isfinite(loss).all(), name


# ------------------------------------------------------------------ config / save
PARAM_LAYERS = [
    lambda: Activation("relu", max_value=6.0, negative_slope=0.1, threshold=0.5),
    lambda: Activation("gelu", approximate=True),
    lambda: Activation("threshold", threshold=0.2, default_value=-1.0),
    lambda: Activation("celu", alpha=0.5),
    lambda: Activation("squareplus", b=1.0),
    lambda: Activation("soft_shrink", threshold=0.3),
    lambda: ReLU(max_value=2.0, threshold=-0.5, negative_slope=0.05),
    lambda: LeakyReLU(negative_slope=0.1),
    lambda: ELU(alpha=0.7),
    lambda: Softmax(),
]


@pytest.mark.parametrize("make", PARAM_LAYERS)
def test_parameterised_layers_config_and_save(tmp_path, make):
    layer = make()
    x = np.random.default_rng(9).standard_normal((4, 3, 6)).astype(np.float32)
    m = Sequential([Input((3, 6)), Dense(6), layer, Activation("linear")], seed=0)
    want = _ref(layer.activation, x.astype(np.float64) @ m.get_weights()[0]
                + m.get_weights()[1], layer.activation_params)
    np.testing.assert_allclose(m.predict(x), want, rtol=3e-5, atol=3e-6)
    cfg = layer.get_config()
    again = type(layer).from_config(cfg)
    assert again.activation == layer.activation
    assert again.activation_params == layer.activation_params
    p = tmp_path / "m.fdm"
    m.save(p)
    np.testing.assert_array_equal(load_model(p).predict(x), m.predict(x))


@pytest.mark.parametrize("name", ALL)
def test_every_activation_saves_and_loads(tmp_path, name):
    x = np.random.default_rng(10).standard_normal((3, 2, 4)).astype(np.float32)
    m = Sequential([Input((2, 4)), Dense(4, activation=name), Activation(name),
                    Activation("linear")], seed=0)
    p = tmp_path / "m.fdm"
    m.save(p)
    np.testing.assert_array_equal(load_model(p).predict(x), m.predict(x))


KERAS_WRITABLE = [n for n in ALL if n != "gelu_tanh"]


@pytest.mark.parametrize("name", KERAS_WRITABLE)
def test_keras_file_round_trip(tmp_path, name):
    pytest.importorskip("h5py")
    x = np.random.default_rng(12).standard_normal((3, 5, 5, 2)).astype(np.float32)
    m = Sequential([Input((5, 5, 2)), Conv2D(4, 2, activation=name), Dense(4, activation=name),
                    Activation(name), Activation("linear")], seed=0)
    p = tmp_path / "m.keras"
    m.save(p)
    back = load_model(p)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))


def test_keras_writer_refuses_what_keras_cannot_name(tmp_path):
    for layer in (Activation("gelu", approximate=True), Activation("celu", alpha=0.5),
                  Activation("threshold", threshold=0.0, default_value=1.0)):
        m = Sequential([Input((4,)), Dense(4), layer], seed=0)
        with pytest.raises(ValueError, match="no Keras equivalent"):
            m.save(tmp_path / "m.keras")
    # the argument-carrying Keras layers are written as those layers
    m = Sequential([Input((4,)), Dense(4), ReLU(max_value=6.0, negative_slope=0.1),
                    LeakyReLU(0.2), ELU(0.5), Activation("linear")], seed=0)
    m.save(tmp_path / "ok.keras")
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(load_model(tmp_path / "ok.keras").predict(x), m.predict(x))


# ------------------------------------------------------------------ Keras 3 itself
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    k = pytest.importorskip("keras")
    if k.backend.backend() != "torch":
        pytest.skip("these tests run Keras on its torch backend")
    k.utils.set_random_seed(0)
    return k


def _keras_same(keras, km, x, y, tmp_path, lr=0.1, atol=2e-5):
    """Load Keras model km into fastdrop: the same predictions; then one full-batch SGD
    step with mse on both: the same weights (forward and backward agree)."""
    p = tmp_path / "k.keras"
    km.save(p)
    m = load_model(p)
    ref = np.asarray(km.predict(x, verbose=0))
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-4, atol=atol)
    km.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    m.compile(optimizer="sgd", loss="mse")
    m.optimizer.learning_rate = lr
    km.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    m.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for a, b in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=atol)


def test_keras_sparsemax_differs_as_documented(keras):
    """Keras 3.15's sparsemax is not a projection onto the simplex (see above); fastdrop's
    is: the documented difference, checked so the note is removed when Keras is fixed."""
    x = np.array([[1.0, 1.0], [0.5, 0.2]], np.float32)
    k = np.asarray(keras.activations.sparsemax(x))
    y = np.empty_like(x)
    _core.act_rows_forward("sparsemax", x, y)
    np.testing.assert_allclose(y, [[0.5, 0.5], [0.65, 0.35]], rtol=1e-6)
    if np.allclose(k, y):
        pytest.fail("Keras's sparsemax now agrees: drop the note in the README")


def test_keras_dense_3d_softmax(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((5, 3)), L.Dense(6, activation="softmax"),
                           L.Dense(4, activation="log_softmax"), L.Flatten(), L.Dense(2)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32)
    _keras_same(keras, km, x, y, tmp_path)


# Not compared with Keras 3.15: sparsemax (its tau sums the cumulative sums over the support
# instead of taking the k-th one: sparsemax([1, 1]) = [0, 0], rows do not sum to 1; fastdrop
# computes Martins & Astudillo's definition, see test_rows_*) and glu after Conv2D (Keras
# declares `filters` output channels but computes filters/2, so its own Flatten + Dense
# cannot run).
@pytest.mark.parametrize("act", ["softmax", "gelu", "silu", "celu", "log_softmax",
                                 "squareplus", "hard_silu", "tanh_shrink", "log_sigmoid",
                                 "mish", "elu", "selu", "sparse_plus", "hard_tanh"])
def test_keras_conv2d_activation(keras, tmp_path, act):
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(4, 3, activation=act),
                           L.Flatten(), L.Dense(3)])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 6, 6, 2)).astype(np.float32)
    y = rng.standard_normal((12, 3)).astype(np.float32)
    _keras_same(keras, km, x, y, tmp_path)


def test_keras_lstm_sequences_then_dense_per_step(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 3)), L.LSTM(5, return_sequences=True),
                           L.Dense(4, activation="gelu"), L.Dense(4, activation="softmax"),
                           L.Activation("linear")])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 6, 3)).astype(np.float32)
    p = tmp_path / "k.keras"
    km.save(p)
    m = load_model(p)
    ref = np.asarray(km.predict(x, verbose=0))
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(m.predict(x).sum(-1), 1, rtol=1e-5)
    # training through the per-step activations (pooled to a 2-D target)
    km2 = keras.Sequential([keras.Input((6, 3)), L.LSTM(5, return_sequences=True),
                            L.Dense(4, activation="softmax"), L.Dense(4, activation="mish"),
                            L.GlobalAveragePooling1D(), L.Dense(2)])
    _keras_same(keras, km2, x, rng.standard_normal((10, 2)).astype(np.float32), tmp_path)


def test_keras_activation_layers_with_arguments(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((4, 6)), L.Dense(6),
                           L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
                           L.Dense(6), L.LeakyReLU(negative_slope=0.25), L.Dense(6),
                           L.ELU(alpha=0.6), L.Dense(6), L.Softmax(), L.Flatten(), L.Dense(2)])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 4, 6)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    _keras_same(keras, km, x, y, tmp_path)


# ------------------------------------------------------------------ recurrent cells
RNN_NEW = ["elu", "selu", "softsign", "relu6", "log_sigmoid", "hard_tanh", "celu", "softplus",
           "leaky_relu", "sparse_sigmoid"]


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("name", RNN_NEW)
def test_rnn_cells_with_more_activations(cell, name):
    """Recurrent cells take every activation whose derivative follows from its output
    (activation, and recurrent_activation for LSTM/GRU): the NumPy reference RNN and
    finite differences of the model's loss."""
    from fastdrop import layers as FL
    from fastdrop.reference import rnn as RR
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    kw = {"activation": name}
    if cell != "SimpleRNN":
        kw["recurrent_activation"] = "hard_tanh" if name != "hard_tanh" else "sigmoid"
    layer = getattr(FL, cell)(4, return_sequences=True, **kw)
    m = Sequential([Input((5, 3)), layer, Activation("linear")], seed=0)
    ws = m.get_weights()
    got = m.predict(x)
    args = dict(activation=name)
    if cell != "SimpleRNN":
        args["recurrent_activation"] = kw["recurrent_activation"]
    if cell == "GRU":
        args["reset_after"] = layer.reset_after
    ref = RR.rnn_forward(cell.lower().replace("simplernn", "simple"), x, *ws, **args,
                         return_sequences=True)
    ref = ref[0] if isinstance(ref, tuple) else ref
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    y = rng.standard_normal((4, 3)).astype(np.float32)
    mm = _loss_model([Input((5, 3)), getattr(FL, cell)(4, return_sequences=True, **kw)])
    _fd_check(mm, x, y)


@pytest.mark.parametrize("name", ["gelu", "silu", "mish", "hard_silu", "tanh_shrink",
                                  "squareplus", "soft_shrink", "sparse_plus", "gelu_tanh"])
def test_simple_rnn_with_activations_that_need_the_pre_activation(name):
    """SimpleRNN keeps its pre-activations, so it runs gelu, silu, ... too: the reference
    RNN forward and finite differences of the loss (also backwards, in Bidirectional)."""
    from fastdrop.layers import Bidirectional, SimpleRNN
    from fastdrop.reference import rnn as RR
    rng = np.random.default_rng(19)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    m = Sequential([Input((5, 3)), SimpleRNN(4, activation=name, return_sequences=True),
                    Activation("linear")], seed=0)
    ref = RR.rnn_forward("simple", x, *m.get_weights(), activation=name,
                         return_sequences=True)
    ref = ref[0] if isinstance(ref, tuple) else ref
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-4, atol=1e-5)
    y = rng.standard_normal((4, 3)).astype(np.float32)
    _fd_check(_loss_model([Input((5, 3)), SimpleRNN(4, activation=name,
                                                    return_sequences=True)]), x, y)
    _fd_check(_loss_model([Input((5, 3)), Bidirectional(SimpleRNN(3, activation=name,
                                                                  return_sequences=True))]),
              x, y)


def test_rnn_refuses_what_it_cannot_run_clearly():
    from fastdrop.layers import LSTM
    with pytest.raises(ValueError, match="not available inside recurrent cells"):
        LSTM(3, activation="gelu")


def test_public_kernels_activation_any_rank():
    """fastdrop.engine.activations.apply / apply_backward: per-step softmax on (n, T, C)
    (what a per-step head needs), every activation on the last axis."""
    K = A
    rng = np.random.default_rng(14)
    z = rng.standard_normal((3, 4, 5)).astype(np.float32)
    p = K.apply("softmax", z)
    np.testing.assert_allclose(p, RA.rows_forward("softmax", z), rtol=2e-6, atol=1e-7)
    g = rng.standard_normal(z.shape).astype(np.float32)
    np.testing.assert_allclose(K.apply_backward("softmax", g, z),
                               RA.rows_vjp("softmax", g, z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(K.apply("relu", z, max_value=0.5),
                               np.clip(z, 0, 0.5), rtol=0, atol=0)
    h = K.apply("glu", np.ascontiguousarray(z[..., :4]))
    assert h.shape == (3, 4, 2)
    with pytest.raises(ValueError, match="name must be one of"):
        K.apply("nope", z)
    with pytest.raises(ValueError, match="grad must have shape"):
        K.apply_backward("tanh", g[:1], z)


def test_keras_recurrent_cells_with_more_activations(keras, tmp_path):
    L = keras.layers
    km = keras.Sequential([keras.Input((6, 3)),
                           L.SimpleRNN(4, activation="elu", return_sequences=True),
                           L.SimpleRNN(4, activation="gelu", return_sequences=True),
                           L.SimpleRNN(4, activation="silu", return_sequences=True),
                           L.LSTM(4, activation="softsign", recurrent_activation="hard_tanh",
                                  return_sequences=True),
                           L.GRU(3, activation="relu6", recurrent_activation="log_sigmoid"),
                           L.Dense(2)])
    rng = np.random.default_rng(15)
    x = rng.standard_normal((10, 6, 3)).astype(np.float32)
    _keras_same(keras, km, x, rng.standard_normal((10, 2)).astype(np.float32), tmp_path)


@pytest.mark.parametrize("name", ["log_softmax", "celu", "hard_silu", "hard_tanh", "exponential",
                                  "tanh_shrink", "log_sigmoid", "soft_shrink", "hard_shrink",
                                  "squareplus", "softmax", "elu", "leaky_relu"])
def test_onnx_export_new_activations(tmp_path, name):
    """ONNX export of the activations ONNX has operators for (after Dense on 3-D input,
    after Conv2D over the channels, as Activation layers), checked with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rng = np.random.default_rng(16)
    for layers, shape in (([Input((3, 4)), Dense(6, activation=name), Activation(name)],
                           (5, 3, 4)),
                          ([Input((5, 5, 2)), Conv2D(4, 3, activation=name), Flatten(),
                            Dense(3)], (5, 5, 5, 2))):
        m = Sequential(layers + [Activation("linear")], seed=0)
        x = rng.standard_normal(shape).astype(np.float32)
        p = tmp_path / "m.onnx"
        m.export(p)
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, m.predict(x), rtol=1e-4, atol=1e-5)


def test_onnx_export_parameterised_activation_layers(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    m = Sequential([Input((4,)), Dense(4), LeakyReLU(0.1), ELU(0.5),
                    Activation("celu", alpha=0.7), Activation("linear")], seed=0)
    x = np.random.default_rng(17).standard_normal((6, 4)).astype(np.float32)
    m.export(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0],
                               m.predict(x), rtol=1e-4, atol=1e-5)
    m2 = Sequential([Input((4,)), Dense(4), ReLU(max_value=2.0, negative_slope=0.1)], seed=0)
    with pytest.raises(NotImplementedError, match="relu with arguments"):
        m2.export(tmp_path / "m2.onnx")


KERAS_FN_CASES = [(n, {}) for n in ALL if n not in ("gelu_tanh", "sparsemax", "swish",
                                                       "hard_swish")] + [
    ("gelu", {"approximate": True}), ("relu", {"max_value": 6.0}),
    ("relu", {"negative_slope": 0.1, "max_value": 2.0, "threshold": 0.5}),
    ("relu", {"negative_slope": 0.3, "threshold": -1.0}), ("leaky_relu", {"negative_slope": 0.05}),
    ("elu", {"alpha": 0.4}), ("celu", {"alpha": 2.0}), ("soft_shrink", {"threshold": 1.2}),
    ("hard_shrink", {"threshold": 0.1}), ("squareplus", {"b": 0.5}),
    ("threshold", {"threshold": 0.3, "default_value": -2.0})]


@pytest.mark.parametrize("name,params", KERAS_FN_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items())}"
                              for n, p in KERAS_FN_CASES])
def test_matches_keras_activation_functions(keras, name, params):
    """Every keras.activations function (with its arguments) on (n, T, C) values spanning
    [-12, 12]: the same values as fastdrop.engine.activations.apply, and the same gradient
    (torch autograd through Keras)."""
    import torch
    K = A
    rng = np.random.default_rng(18)
    x = np.concatenate([rng.uniform(-12, 12, 240), np.linspace(-3, 3, 48)])
    x = x.reshape(4, 6, 12).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    kf = getattr(keras.activations, name)
    kt = kf(xt, **params)
    ref = kt.detach().numpy()
    got = K.apply(name, x, **params)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    (kt * torch.tensor(g)).sum().backward()
    kg = xt.grad.numpy()
    fg = K.apply_backward(name, g, x, **params)
    # at the kinks the one-sided choices may differ: allow a few such elements
    bad = ~np.isclose(fg, kg, rtol=2e-5, atol=2e-5)
    assert bad.sum() <= 2, (name, x[bad], fg[bad], kg[bad])


# ------------------------------------------- a final softmax under a loss that is not CE
def _final_softmax_model(rank3, as_layer, loss, seed=0):
    shape = (4, 3) if rank3 else (5,)
    layers = [Input(shape), Dense(6, activation="tanh")]
    layers += [Dense(4), Activation("softmax")] if as_layer else [Dense(4, activation="softmax")]
    m = Sequential(layers, seed=seed)
    m.compile(optimizer="sgd", loss=loss)
    return m


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
@pytest.mark.parametrize("rank3", [False, True])
@pytest.mark.parametrize("as_layer", [False, True])
def test_final_softmax_with_a_regression_loss(loss, rank3, as_layer):
    """Keras trains a softmax output under any loss (mse on probabilities, per step on N-D
    outputs): the loss is the loss of predict()'s rows (last-axis distributions) and the
    gradients are its finite differences."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 4, 3) if rank3 else (8, 5)).astype(np.float32)
    y = rng.random((8, 4, 4) if rank3 else (8, 4)).astype(np.float32)
    y /= y.sum(-1, keepdims=True)
    m = _final_softmax_model(rank3, as_layer, loss)
    p = m.predict(x).astype(np.float64)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-5)
    d = p - y
    want = {"mse": np.mean(d ** 2), "mae": np.mean(np.abs(d)),
            "huber": np.mean(np.where(np.abs(d) <= 1, 0.5 * d ** 2, np.abs(d) - 0.5))}[loss]
    got = float(m.loss_and_gradients(x, y, step=0)["loss"])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if loss != "mae":               # |d| has kinks: central differences only where smooth
        _fd_check(m, x, y)


def test_final_softmax_with_from_logits_is_refused():
    m = Sequential([Input((5,)), Dense(4, activation="softmax")])
    m.compile(optimizer="sgd", loss=__import__("fastdrop").losses.CategoricalCrossentropy(
        from_logits=True))
    with pytest.raises(ValueError, match="from_logits"):
        m.fit(np.zeros((2, 5), np.float32), np.eye(4, dtype=np.float32)[:2], verbose=0)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_keras_final_softmax_regression_loss(keras, tmp_path, loss):
    L = keras.layers
    km = keras.Sequential([keras.Input((4, 3)), L.Dense(6, activation="tanh"),
                           L.Dense(4, activation="softmax")])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 4, 3)).astype(np.float32)
    y = rng.random((16, 4, 4)).astype(np.float32)
    p = tmp_path / "k.keras"
    km.save(p)
    m = load_model(p)
    km.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
    m.compile(optimizer="sgd", loss=loss)
    m.optimizer.learning_rate = 0.5
    hk = km.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history["loss"]
    hf = m.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(hf, hk, rtol=1e-4)
    for a, b in zip(m.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=2e-5)

"""fastdrop.losses against independent float64 NumPy formulas (fastdrop.reference.losses)
and finite differences: values and gradients, with and without row weights, label
smoothing, logits and probability inputs; targets preparation; threads / ISA paths;
config round trips and names."""
import numpy as np
import pytest

from fastdrop import _core
from fastdrop import losses as L
from fastdrop.reference import losses as RL


def rand(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def weights(m, seed):
    return np.random.default_rng(seed).uniform(0.0, 3.0, m).astype(np.float32)


def run(loss, z, y, w=None):
    g = np.full(z.shape, np.nan, np.float32)
    total = loss.forward_backward(z, y, g, w)
    assert loss.sum_loss(z, y, w) == pytest.approx(total, rel=1e-6, abs=1e-9)
    return total, g


def check(total, g, ref_total, ref_g, rtol=1e-5):
    assert total == pytest.approx(ref_total, rel=rtol, abs=1e-7)
    np.testing.assert_allclose(g, ref_g, rtol=1e-4, atol=1e-6 * np.abs(ref_g).max() + 1e-9)


W = [None, "w"]


# ---------------------------------------------------------- cross-entropies
@pytest.mark.parametrize("shape", [(1, 2), (7, 3), (64, 10), (33, 100)])
@pytest.mark.parametrize("w", W)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_categorical(shape, w, ls):
    m, c = shape
    z = rand(shape, m * c, 3.0)
    t = np.random.default_rng(1).dirichlet(np.ones(c), m).astype(np.float32)
    wr = weights(m, 2) if w else None
    loss = L.CategoricalCrossentropy(from_logits=True, label_smoothing=ls)
    check(*run(loss, z, t, wr), *RL.categorical_crossentropy(z, t, wr, ls))


@pytest.mark.parametrize("shape", [(1, 2), (9, 3), (64, 10), (300, 1000)])
@pytest.mark.parametrize("w", W)
def test_sparse_categorical(shape, w):
    m, c = shape
    z = rand(shape, m + c, 3.0)
    y = np.random.default_rng(3).integers(0, c, m).astype(np.int64)
    wr = weights(m, 4) if w else None
    loss = L.SparseCategoricalCrossentropy()
    check(*run(loss, z, y, wr), *RL.sparse_categorical_crossentropy(z, y, wr))


def test_cross_entropy_weights_of_one_equal_no_weights():
    z = rand((50, 7), 5)
    y = np.random.default_rng(6).integers(0, 7, 50)
    t = np.eye(7, dtype=np.float32)[y]
    ones = np.ones(50, np.float32)
    for loss, tgt in ((L.SparseCategoricalCrossentropy(), y),
                      (L.CategoricalCrossentropy(), t)):
        a, ga = run(loss, z, tgt)
        b, gb = run(loss, z, tgt, ones)
        np.testing.assert_array_equal(ga, gb)
        assert a == pytest.approx(b, rel=1e-7)


def test_categorical_label_smoothing_equals_smoothed_targets():
    z = rand((20, 5), 7)
    t = np.eye(5, dtype=np.float32)[np.arange(20) % 5]
    a, ga = run(L.CategoricalCrossentropy(label_smoothing=0.2), z, t)
    b, gb = run(L.CategoricalCrossentropy(), z, (t * 0.8 + 0.2 / 5).astype(np.float32))
    assert a == pytest.approx(b, rel=1e-6)
    np.testing.assert_allclose(ga, gb, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("w", W)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_categorical_probs_finite_differences(w, ls):
    """The non-fused path (outputs already probabilities): Keras renormalises and clips."""
    m, c = 6, 4
    p = np.random.default_rng(8).dirichlet(np.ones(c), m).astype(np.float32)
    p[0] = [1.0, 0.0, 0.0, 0.0]              # clipped entries: zero gradient there
    t = np.eye(c, dtype=np.float32)[np.arange(m) % c]
    wr = weights(m, 9) if w else None
    loss = L.CategoricalCrossentropy(label_smoothing=ls)
    g = np.empty_like(p)
    total = loss.forward_backward_probs(p, t, g, wr)
    assert total == pytest.approx(RL.categorical_crossentropy_probs_value(p, t, wr, ls),
                                  rel=1e-6)
    assert loss.sum_loss_probs(p, t, wr) == pytest.approx(total, rel=1e-12)
    fd = RL.numeric_grad(lambda x: RL.categorical_crossentropy_probs_value(x, t, wr, ls),
                         p.astype(np.float64), h=1e-7) / m
    fd[0, 1:] = 0.0                          # at the clip boundary (p = 0): one-sided
    g[0, 1:] = 0.0
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-5)
    # sparse labels give the same
    gs = np.empty_like(p)
    ts = L.SparseCategoricalCrossentropy()
    assert ts.forward_backward_probs(p, np.arange(m) % c, gs, wr) == pytest.approx(
        L.CategoricalCrossentropy().forward_backward_probs(p, t, g, wr), rel=1e-12)


# ---------------------------------------------------------------- binary
@pytest.mark.parametrize("shape", [(1, 1), (17, 1), (128, 1), (9, 3), (40, 37), (3, 2500)])
@pytest.mark.parametrize("w", W)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_binary_logits(isa, shape, w, ls):
    m, c = shape
    z = rand(shape, m * 31 + c, 4.0)
    z.flat[::5] *= 10                           # saturated logits
    t = (np.random.default_rng(10).random(shape) < 0.5).astype(np.float32)
    t.flat[::3] = 0.3                           # soft targets
    wr = weights(m, 11) if w else None
    loss = L.BinaryCrossentropy(from_logits=True, label_smoothing=ls)
    total, g = run(loss, z, t, wr)
    check(total, g, *RL.binary_crossentropy(z, t, wr, ls))


def test_binary_logits_finite_differences():
    m, c = 5, 3
    z = rand((m, c), 12, 2.0)
    t = (np.random.default_rng(13).random((m, c)) < 0.5).astype(np.float32)
    wr = weights(m, 14)
    g = np.empty_like(z)
    L.BinaryCrossentropy(label_smoothing=0.1).forward_backward(z, t, g, wr)
    fd = RL.numeric_grad(lambda x: RL.binary_crossentropy(x, t, wr, 0.1)[0],
                         z.astype(np.float64)) / m
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
    # and finite differences of fastdrop's own sum_loss (float32 steps)
    loss = L.BinaryCrossentropy(label_smoothing=0.1)
    h = np.float32(1e-2)
    for i in range(z.size):
        zp, zm = z.copy(), z.copy()
        zp.flat[i] += h
        zm.flat[i] -= h
        d = (loss.sum_loss(zp, t, wr) - loss.sum_loss(zm, t, wr)) / \
            (float(zp.flat[i]) - float(zm.flat[i])) / m
        assert d == pytest.approx(g.flat[i], rel=2e-3, abs=2e-6)


def test_binary_extreme_logits():
    z = np.array([[1e4], [-1e4], [88.0], [-88.0], [0.0]], np.float32)
    t = np.array([[1.0], [0.0], [0.0], [1.0], [1.0]], np.float32)
    total, g = run(L.BinaryCrossentropy(from_logits=True), z, t)
    rt, rg = RL.binary_crossentropy(z, t)
    assert np.isfinite(total) and total == pytest.approx(rt, rel=1e-6)
    np.testing.assert_allclose(g, rg, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (31, 1), (8, 5), (1, 1030)])
@pytest.mark.parametrize("w", W)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_binary_probs(isa, shape, w, ls):
    """from_logits=False without fusion: Keras clips p to [1e-7, 1 - 1e-7]."""
    m, c = shape
    rng = np.random.default_rng(15 + m)
    p = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    p.flat[::7] = rng.uniform(0, 1e-3, p.flat[::7].shape)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    wr = weights(m, 16) if w else None
    loss = L.BinaryCrossentropy(label_smoothing=ls)
    g = np.empty_like(p)
    total = loss.forward_backward_probs(p, t, g, wr)
    assert total == pytest.approx(RL.binary_crossentropy_probs_value(p, t, wr, ls),
                                  rel=1e-6)
    assert loss.sum_loss_probs(p, t, wr) == pytest.approx(total, rel=1e-12)
    fd = RL.numeric_grad(lambda x: RL.binary_crossentropy_probs_value(x, t, wr, ls),
                         p.astype(np.float64), h=1e-9) / m
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())


def test_binary_probs_clipping():
    p = np.array([[0.0, 1.0, 1e-9, 1 - 1e-9, np.float32(0.5)]], np.float32)
    t = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]], np.float32)
    g = np.empty_like(p)
    total = L.BinaryCrossentropy().forward_backward_probs(p, t, g)
    assert total == pytest.approx(RL.binary_crossentropy_probs_value(p, t), rel=1e-6)
    assert np.all(g[0, :4] == 0)                     # outside [eps, 1 - eps]: clipped
    assert g[0, 4] == pytest.approx(-2.0 / 5, rel=1e-6)
    assert np.isfinite(total)


def test_binary_logits_equal_probs_on_sigmoid():
    """The fused path on logits and the probability path on sigmoid(z) agree."""
    z = rand((64, 2), 17, 2.0)
    t = (np.random.default_rng(18).random((64, 2)) < 0.5).astype(np.float32)
    p = np.empty_like(z)
    _core.act_forward("sigmoid", z.reshape(-1), p.reshape(-1))
    loss = L.BinaryCrossentropy()
    a = loss.sum_loss(z, t)
    b = loss.sum_loss_probs(p, t)
    assert a == pytest.approx(b, rel=1e-5)


# ------------------------------------------------------------- regression
REG = [(L.MeanSquaredError(), RL.mean_squared_error),
       (L.MeanAbsoluteError(), RL.mean_absolute_error),
       (L.Huber(), RL.huber),
       (L.Huber(delta=0.3), lambda p, t, w=None: RL.huber(p, t, w, 0.3))]


@pytest.mark.parametrize("k", range(len(REG)))
@pytest.mark.parametrize("shape", [(1, 1), (50, 1), (20, 3)])
@pytest.mark.parametrize("w", W)
def test_regression(k, shape, w):
    loss, ref = REG[k]
    p = rand(shape, 19, 2.0)
    t = rand(shape, 20, 2.0)
    t.flat[::4] = p.flat[::4]                        # e = 0: MAE gradient 0
    wr = weights(shape[0], 21) if w else None
    check(*run(loss, p, t, wr), *ref(p, t, wr))


@pytest.mark.parametrize("k", range(len(REG)))
def test_regression_finite_differences(k):
    loss, ref = REG[k]
    p = rand((6, 2), 22, 2.0)
    t = rand((6, 2), 23, 2.0)
    wr = weights(6, 24)
    g = np.empty_like(p)
    loss.forward_backward(p, t, g, wr)
    fd = RL.numeric_grad(lambda x: ref(x, t, wr)[0], p.astype(np.float64)) / 6
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_mae_gradient_zero_at_equality():
    p = np.array([[1.0, 2.0, 3.0]], np.float32)
    g = np.empty_like(p)
    L.MeanAbsoluteError().forward_backward(p, np.array([[1.0, 1.0, 4.0]], np.float32), g)
    np.testing.assert_array_equal(g, np.array([[0.0, 1 / 3, -1 / 3]], np.float32))


def test_regression_weights_of_one():
    p, t = rand((30, 2), 25), rand((30, 2), 26)
    for loss in (L.MeanAbsoluteError(), L.Huber()):
        a, ga = run(loss, p, t)
        b, gb = run(loss, p, t, np.ones(30, np.float32))
        assert a == b
        np.testing.assert_array_equal(ga, gb)


# ----------------------------------------------- determinism: threads and ISAs
def test_losses_thread_invariant(threads):
    z = rand((5000, 37), 27, 3.0)
    t = (np.random.default_rng(28).random(z.shape) < 0.5).astype(np.float32)
    y = np.random.default_rng(29).integers(0, 37, 5000)
    wr = weights(5000, 30)
    cases = [(L.BinaryCrossentropy(), t), (L.MeanAbsoluteError(), t), (L.Huber(), t),
             (L.SparseCategoricalCrossentropy(), y)]
    for loss, tgt in cases:
        res = []
        for n in (1, 2):
            threads(n)
            g = np.empty_like(z)
            res.append((loss.forward_backward(z, tgt, g, wr), g))
        assert res[0][0] == res[1][0], loss
        np.testing.assert_array_equal(res[0][1], res[1][1])
    res = []
    for n in (1, 2):
        threads(n)
        g = np.empty_like(z)
        res.append((L.BinaryCrossentropy().forward_backward_probs(
            np.abs(np.tanh(z)), t, g, wr), g))
    assert res[0][0] == res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])


def test_bce_isa_paths_bitwise_identical():
    old = _core.isa()
    z = rand((300, 5), 31, 5.0)
    t = (np.random.default_rng(32).random(z.shape) < 0.5).astype(np.float32)
    wr = weights(300, 33)
    out = []
    try:
        for isa in _core.isa_supported():
            _core.set_isa(isa)
            g1, g2 = np.empty_like(z), np.empty_like(z)
            a = L.BinaryCrossentropy().forward_backward(z, t, g1, wr)
            b = L.BinaryCrossentropy().forward_backward_probs(_sig(z), t, g2, wr)
            out.append((a, g1, b, g2))
    finally:
        _core.set_isa(old)
    for o in out[1:]:
        assert o[0] == out[0][0] and o[2] == out[0][2]
        np.testing.assert_array_equal(o[1], out[0][1])
        np.testing.assert_array_equal(o[3], out[0][3])


def _sig(z):
    return (1 / (1 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def test_bce_kernel_loss_rows_and_empty():
    z = rand((10, 3), 34)
    t = (z > 0).astype(np.float32)
    rows = np.empty(10, np.float32)
    total = _core.bce_logits(z, t, 1.0, None, None, 0.0, rows)
    assert total == pytest.approx(float(rows.astype(np.float64).sum()), rel=1e-6)
    e = np.empty((0, 3), np.float32)
    assert _core.bce_logits(e, e, 1.0) == 0.0
    with pytest.raises(ValueError, match="targets have shape"):
        _core.bce_logits(z, t[:5], 1.0)
    with pytest.raises(ValueError, match="weights have 3 rows"):
        _core.bce_logits(z, t, 1.0, None, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="kind must be one of"):
        _core.regression_loss("hinge", z, t, 1.0)
    with pytest.raises(ValueError, match=r"labels\[1\] = 7 is outside \[0, 3\)"):
        _core.softmax_xent_weighted(z, np.array([0, 7] + [0] * 8), None, 1.0)


# ------------------------------------------------------------------ targets
def test_prepare_targets():
    sce = L.SparseCategoricalCrossentropy()
    y = sce.prepare_targets(np.array([[0], [2], [1]]), 3, 3)
    assert y.dtype == np.int64 and y.shape == (3,)
    assert sce.prepare_targets(np.array([0.0, 2.0]), 2, 3).tolist() == [0, 2]
    with pytest.raises(ValueError, match="y has 2 samples but x has 3"):
        sce.prepare_targets([0, 1], 3, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        sce.prepare_targets([0, 3], 2, 3)
    with pytest.raises(ValueError, match="integer class labels of shape"):
        sce.prepare_targets(np.eye(3), 3, 3)
    with pytest.raises(TypeError, match="integer class labels"):
        sce.prepare_targets(np.array(["a", "b"]), 2, 3)
    cce = L.CategoricalCrossentropy()
    assert cce.prepare_targets(np.eye(3, dtype=np.int64), 3, 3).dtype == np.float32
    with pytest.raises(ValueError, match=r"one-hot targets of shape \(n, 3\)"):
        cce.prepare_targets(np.array([0, 1, 2]), 3, 3)
    bce = L.BinaryCrossentropy()
    yb = bce.prepare_targets(np.array([0, 1, 1], bool), 3, 1)
    assert yb.shape == (3, 1) and yb.dtype == np.float32
    with pytest.raises(ValueError, match=r"shape \(n, 2\) for binary_crossentropy"):
        bce.prepare_targets(np.array([0, 1, 1]), 3, 2)
    with pytest.raises(ValueError, match="validation y contains NaN"):
        bce.prepare_targets(np.array([0, np.nan]), 2, 1, name="validation y")
    mse = L.MeanSquaredError()
    assert mse.prepare_targets([1.0, 2.0], 2, 1).shape == (2, 1)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        mse.prepare_targets(np.ones((2, 3)), 2, 2)
    assert L.prepare_sample_weight([1, 2], 2).dtype == np.float32
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(3,\)"):
        L.prepare_sample_weight([1, 2], 3)


# ------------------------------------------------------------ config, names
def test_names_heads_and_config():
    cases = {
        "categorical_crossentropy": (L.CategoricalCrossentropy, "softmax"),
        "sparse_categorical_crossentropy": (L.SparseCategoricalCrossentropy, "softmax"),
        "binary_crossentropy": (L.BinaryCrossentropy, "sigmoid"),
        "bce": (L.BinaryCrossentropy, "sigmoid"),
        "mse": (L.MeanSquaredError, None), "MSE": (L.MeanSquaredError, None),
        "mean_squared_error": (L.MeanSquaredError, None),
        "mae": (L.MeanAbsoluteError, None), "mean_absolute_error": (L.MeanAbsoluteError, None),
        "huber": (L.Huber, None), "huber_loss": (L.Huber, None), "Huber": (L.Huber, None),
    }
    for name, (cls, head) in cases.items():
        loss = L.get(name)
        assert type(loss) is cls and loss.head == head
        assert loss.reduction == "sum_over_batch_size"
        assert L.get(loss.name).__class__ is cls             # saving keys by name
    for loss in (L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                 L.SparseCategoricalCrossentropy(from_logits=True),
                 L.BinaryCrossentropy(label_smoothing=0.3), L.Huber(delta=2.5),
                 L.MeanAbsoluteError(), L.MeanSquaredError()):
        again = type(loss).from_config(loss.get_config())
        assert again == loss and again.get_config() == loss.get_config()
        assert L.get(L.serialize(loss)) == loss
    assert L.SparseCategoricalCrossentropy().sparse
    assert not L.CategoricalCrossentropy().sparse
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        L.BinaryCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta must be a positive"):
        L.Huber(delta=0)
    with pytest.raises(ValueError, match="reduction must be"):
        L.MeanSquaredError(reduction="sum")
    with pytest.raises(TypeError, match="from_logits must be a bool"):
        L.BinaryCrossentropy(from_logits="yes")
    with pytest.raises(TypeError):
        L.SparseCategoricalCrossentropy(label_smoothing=0.1)  # as Keras 3: no such argument
    with pytest.raises(ValueError, match="loss must be one of"):
        L.get("hinge")


def test_legacy_call_still_works():
    """The v1 model's forward_backward(logits, y, m, grad)."""
    z = rand((8, 4), 35)
    y = np.arange(8) % 4
    g1, g2 = np.empty_like(z), np.empty_like(z)
    a = L.SparseCategoricalCrossentropy().forward_backward(z, y, 8, g1)
    b = L.SparseCategoricalCrossentropy().forward_backward(z, y, g2)
    assert a == b
    np.testing.assert_array_equal(g1, g2)


def test_grad_none_is_sum_loss():
    z = rand((12, 3), 36)
    t = (z > 0).astype(np.float32)
    y = np.arange(12) % 3
    for loss, tgt in ((L.MeanSquaredError(), t), (L.MeanAbsoluteError(), t), (L.Huber(), t),
                      (L.BinaryCrossentropy(), t), (L.CategoricalCrossentropy(), t / 1.0),
                      (L.SparseCategoricalCrossentropy(), y)):
        assert loss.forward_backward(z, tgt, None) == pytest.approx(loss.sum_loss(z, tgt),
                                                                    rel=1e-6)


@pytest.mark.parametrize("c", [1, 3, 8, 10, 17, 1024, 1025, 2100])
def test_bce_row_blocking_does_not_change_rows(c):
    """A row's loss and gradient do not depend on which rows share its block."""
    z = rand((7, c), 40 + c, 3.0)
    t = (np.random.default_rng(41).random(z.shape) < 0.5).astype(np.float32)
    rows_all = np.empty(7, np.float32)
    g_all = np.empty_like(z)
    _core.bce_logits(z, t, 0.5, g_all, None, 0.0, rows_all)
    for r in range(7):
        rows = np.empty(1, np.float32)
        g = np.empty((1, c), np.float32)
        _core.bce_logits(z[r:r + 1], t[r:r + 1], 0.5, g, None, 0.0, rows)
        assert rows[0] == rows_all[r]
        np.testing.assert_array_equal(g[0], g_all[r])


def test_keras_configs_load():
    """Keras 3 get_config() dicts (with axis, dtype, reduction, name) build our losses."""
    keras_cfgs = {
        "BinaryCrossentropy": {"name": "binary_crossentropy", "reduction":
                               "sum_over_batch_size", "dtype": None, "from_logits": True,
                               "label_smoothing": 0.1, "axis": -1},
        "CategoricalCrossentropy": {"name": "categorical_crossentropy", "reduction":
                                    "sum_over_batch_size", "dtype": "float32",
                                    "from_logits": False, "label_smoothing": 0.0,
                                    "axis": -1},
        "SparseCategoricalCrossentropy": {"name": "sparse_categorical_crossentropy",
                                          "reduction": "sum_over_batch_size", "dtype": None,
                                          "from_logits": True, "ignore_class": None,
                                          "axis": -1},
        "Huber": {"name": "huber_loss", "reduction": "sum_over_batch_size", "dtype": None,
                  "delta": 2.0},
        "MeanAbsoluteError": {"name": "mean_absolute_error",
                              "reduction": "sum_over_batch_size", "dtype": None},
    }
    for cls, cfg in keras_cfgs.items():
        loss = L.get({"class_name": cls, "config": cfg})
        assert type(loss).__name__ == cls
    assert L.get({"class_name": "Huber", "config": keras_cfgs["Huber"]}).delta == 2.0
    with pytest.raises(ValueError, match="dtype must be"):
        L.MeanSquaredError(dtype="float16")

"""Elementwise, loss and dispatch kernels against fastdrop.reference, plus the bad-input
contract of every public kernel (TypeError/ValueError naming the argument)."""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core, kernels as K, reference as R

SIZES = [1, 7, 15, 16, 17, 63, 1000, 4099, 100_003]


def rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------------ elementwise
@pytest.mark.parametrize("n", SIZES)
def test_relu_matches_reference(isa, n):
    x = rand(n, n)
    x[::5] = 0.0
    y = K.relu(x)
    np.testing.assert_array_equal(y, R.relu(x))
    g = rand(n, n + 1)
    np.testing.assert_array_equal(K.relu_backward(g, y), R.relu_backward(g, y))


def test_relu_in_place_and_nd(isa):
    x = rand((3, 5, 7), 1)
    ref = R.relu(x)
    out = K.relu(x, out=x)
    assert out is x
    np.testing.assert_array_equal(x, ref)


def test_relu_nan_and_inf():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5], np.float32)
    y = K.relu(x)
    assert y[1] == np.inf and y[2] == 0 and y[5] == 1.5
    assert y[4] == 0 and y[3] == 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (128, 10), (257, 1031)])
def test_bias_add(isa, shape):
    x, b = rand(shape, 2), rand(shape[1], 3)
    np.testing.assert_array_equal(K.bias_add(x, b), R.bias_add(x, b))


def test_elementwise_thread_invariant(threads):
    x = rand(1_000_003, 4)
    g = rand(1_000_003, 5)
    outs = []
    for t in (1, 2):
        threads(t)
        y = K.relu(x)
        outs.append((y, K.relu_backward(g, y)))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- losses
@pytest.mark.parametrize("n,c", [(1, 2), (1, 10), (7, 3), (128, 10), (300, 1000), (33, 1)])
def test_softmax_xent_labels(isa, n, c):
    rng = np.random.default_rng(n * c)
    logits = rand((n, c), n + c, scale=3.0)
    labels = rng.integers(0, c, n)
    loss, grad = K.softmax_cross_entropy(logits, labels)
    rl, rg = R.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(rl, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(grad, rg, rtol=1e-4, atol=1e-6 / n)
    # the gradient rows sum to 0 (softmax and target both sum to 1)
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)


@pytest.mark.parametrize("magnitude", [1e4, -1e4, 3e38])
def test_softmax_xent_extreme_logits(magnitude):
    logits = np.array([[magnitude, 0.0, -magnitude], [0.0, magnitude, 1.0]], np.float32)
    labels = np.array([0, 2])
    loss, grad = K.softmax_cross_entropy(logits, labels)
    rl, rg = R.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(rl, rel=1e-6)
    np.testing.assert_allclose(grad, rg, atol=1e-7)


def test_softmax_xent_targets_soft_and_onehot():
    rng = np.random.default_rng(3)
    logits = rand((64, 10), 9, scale=4)
    labels = rng.integers(0, 10, 64)
    onehot = np.eye(10, dtype=np.float32)[labels]
    l1, g1 = K.softmax_cross_entropy(logits, labels)
    l2, g2 = K.softmax_cross_entropy(logits, onehot)
    assert l1 == pytest.approx(l2, rel=1e-6)
    np.testing.assert_allclose(g1, g2, atol=1e-8)
    soft = rng.random((64, 10)).astype(np.float32)
    soft /= soft.sum(axis=1, keepdims=True)
    l3, g3 = K.softmax_cross_entropy(logits, soft)
    rl, rg = R.softmax_cross_entropy(logits, soft)
    assert l3 == pytest.approx(rl, rel=1e-5)
    np.testing.assert_allclose(g3, rg, rtol=1e-4, atol=1e-7)


def test_softmax_xent_gradient_finite_differences():
    """The returned gradient is the derivative of the returned loss (central differences
    in float64 on the reference loss; the kernel's gradient must agree)."""
    rng = np.random.default_rng(5)
    logits = rand((4, 6), 11)
    labels = rng.integers(0, 6, 4)
    _, grad = K.softmax_cross_entropy(logits, labels)
    eps = 1e-3
    for i in range(4):
        for j in range(6):
            lp, lm = logits.astype(np.float64).copy(), logits.astype(np.float64).copy()
            lp[i, j] += eps
            lm[i, j] -= eps
            f = lambda z: -R.log_softmax(z)[np.arange(4), labels].mean()  # noqa: E731
            assert grad[i, j] == pytest.approx((f(lp) - f(lm)) / (2 * eps), abs=1e-5)


def test_softmax_rows(isa):
    x = rand((50, 13), 6, scale=50)
    np.testing.assert_allclose(K.softmax(x), R.softmax(x), rtol=1e-5, atol=1e-7)


def test_softmax_xent_thread_invariant(threads):
    logits = rand((4096, 100), 7)
    labels = np.random.default_rng(0).integers(0, 100, 4096)
    res = []
    for t in (1, 2):
        threads(t)
        res.append(K.softmax_cross_entropy(logits, labels))
    assert res[0][0] == res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])


# ------------------------------------------------------------------ optimizers
def test_adam_matches_reference(isa):
    n = 10_007
    w, g = rand(n, 1), rand(n, 2)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    rw, rm, rv = w.copy(), m.copy(), v.copy()
    for t in range(1, 4):
        _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.01, t)
        rw, rm, rv = R.adam_update(rw, g, rm, rv, 1e-3, t, weight_decay=0.01)
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m, rm, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_reference(momentum, nesterov):
    n = 5000
    w, g = rand(n, 1), rand(n, 2)
    vel = np.zeros(n, np.float32)
    rw, rv = w.copy(), vel.copy()
    for _ in range(3):
        _core.sgd_update(w, g, vel, 0.1, momentum, nesterov, 0.001)
        rw, rv = R.sgd_update(rw, g, rv, 0.1, momentum, nesterov, 0.001)
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-6)


def test_maxnorm_matches_reference():
    w = rand((300, 70), 3, scale=0.5)
    ref = R.maxnorm(w, 2.0)
    _core.maxnorm(w, 2.0)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-7)
    assert np.sqrt((w.astype(np.float64) ** 2).sum(axis=0)).max() <= 2.0 + 1e-4


def test_colsum_fixed_order(threads):
    x = rand((513, 777), 8)
    out = np.empty(777, np.float32)
    res = []
    for t in (1, 2):
        threads(t)
        _core.colsum(x, out)
        res.append(out.copy())
    np.testing.assert_array_equal(res[0], res[1])
    np.testing.assert_allclose(res[0], x.astype(np.float64).sum(0), rtol=1e-4, atol=1e-3)


# -------------------------------------------------------------------- dispatch
def test_cpu_info():
    info = fastdrop.cpu_info()
    assert info["isa"] in info["supported"]
    assert "ref" in info["compiled"] and "ref" in info["supported"]
    assert set(info["supported"]) <= set(info["compiled"])
    assert info["threads"] >= 1
    assert isinstance(info["openmp"], bool)


def test_set_num_threads(threads):
    threads(3)
    if fastdrop.cpu_info()["openmp"]:
        assert fastdrop.get_num_threads() == 3
    with pytest.raises(ValueError, match="n must be"):
        fastdrop.set_num_threads(-1)
    with pytest.raises(TypeError, match="n must be"):
        fastdrop.set_num_threads("2")


def test_isa_env_override(tmp_path):
    import subprocess
    import sys
    for name in _core.isa_supported():
        out = subprocess.run(
            [sys.executable, "-c", "import fastdrop; print(fastdrop.cpu_info()['isa'])"],
            env={**__import__("os").environ, "FASTDROP_ISA": name},
            capture_output=True, text=True, cwd=tmp_path, check=True)
        assert out.stdout.strip() == name
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import fastdrop"],
        env={**__import__("os").environ, "FASTDROP_ISA": "sse9"},
        capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "FASTDROP_ISA" in out.stderr


def test_set_isa_rejects_unknown():
    with pytest.raises(ValueError, match="isa"):
        _core.set_isa("neon")


# ------------------------------------------------------------------- bad input
F = np.ones((4, 4), np.float32)
V1 = np.ones(8, np.float32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: K.gemm(F.astype(np.float64), F), TypeError, "a must have dtype float32"),
    (lambda: K.gemm([[1.0]], F), TypeError, "a must be a numpy"),
    (lambda: K.gemm(F, F[:, ::2]), ValueError, "b must be C-contiguous"),
    (lambda: K.gemm(F, np.ones((3, 4), np.float32)), ValueError, "inner dimensions"),
    (lambda: K.gemm(F, F, out=np.ones((4, 3), np.float32)), ValueError, "out must have shape"),
    (lambda: K.gemm(F, F, beta=1.0), ValueError, "out is required"),
    (lambda: K.gemm(F, F, alpha=float("nan")), ValueError, "alpha must be finite"),
    (lambda: K.gemm(F, F, trans_a=1), TypeError, "trans_a must be a bool"),
    (lambda: K.gemm(np.ones((0, 4), np.float32), F), ValueError, "a must not be empty"),
    (lambda: K.gemm(V1, F), ValueError, "a must be 2-dimensional"),
    (lambda: K.gemm(F, F, out=F), ValueError, "out must not overlap a"),
    (lambda: K.relu(V1.astype(np.float16)), TypeError, "x must have dtype float32"),
    (lambda: K.relu(np.ones(0, np.float32)), ValueError, "x must not be empty"),
    (lambda: K.relu(V1, out=np.ones(7, np.float32)), ValueError, "out must have shape"),
    (lambda: K.relu_backward(V1, np.ones(7, np.float32)), ValueError, "y must have the shape"),
    (lambda: K.bias_add(F, V1), ValueError, "bias must have shape"),
    (lambda: K.softmax_cross_entropy(F, np.array([0, 1, 2, 4])), ValueError,
     r"labels must be in \[0, 4\)"),
    (lambda: K.softmax_cross_entropy(F, np.array([0, 1, -1, 2])), ValueError, "labels must be in"),
    (lambda: K.softmax_cross_entropy(F, np.array([0, 1, 2])), ValueError, "labels must have length"),
    (lambda: K.softmax_cross_entropy(F, np.array([0., 1, 2, 3])), TypeError, "integer class"),
    (lambda: K.softmax_cross_entropy(F, np.ones((4, 3), np.float32)), ValueError, "shape of logits"),
    (lambda: K.softmax_cross_entropy(F, [0, 1, 2, 3]), TypeError, "labels must be a numpy"),
    (lambda: K.softmax_cross_entropy(V1, np.zeros(8, int)), ValueError, "logits must be 2-dim"),
    (lambda: K.dropout(V1, float("nan"), 0), ValueError, "rate must be in"),
    (lambda: K.dropout(V1, 1.0, 0), ValueError, "rate must be in"),
    (lambda: K.dropout(V1, -0.1, 0), ValueError, "rate must be in"),
    (lambda: K.dropout(V1, "0.5", 0), TypeError, "rate must be a float"),
    (lambda: K.dropout(V1, 0.5, -1), ValueError, "seed must be in"),
    (lambda: K.dropout(V1, 0.5, 1.5), TypeError, "seed must be an integer"),
    (lambda: K.dropout(V1.astype(np.float64), 0.5, 0), TypeError, "x must have dtype float32"),
    (lambda: K.dropout(np.ones((4, 4), np.float32)[:, 1], 0.5, 0), ValueError, "C-contiguous"),
    (lambda: K.dropout(np.ones(0, np.float32), 0.5, 0), ValueError, "x must not be empty"),
    (lambda: K.dropout_backward(V1, np.zeros(2, np.uint8), 0.5), ValueError, "mask must have shape"),
    (lambda: K.dropout_backward(V1, np.zeros(1, np.int8), 0.5), TypeError, "mask must have dtype uint8"),
    (lambda: K.dropout_backward(V1, np.zeros(1, np.uint8), 1.5), ValueError, "rate must be in"),
])
def test_bad_input_raises_naming_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_out_rejected():
    out = np.zeros(8, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        K.relu(V1, out=out)


def test_core_gemm_guards_its_arguments():
    """The low-level binding takes ndarrays without memoryview parsing (for latency) but
    still refuses anything that could make C read or write out of bounds."""
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    c = np.empty((3, 5), np.float32)
    _core.gemm(a, b, c, False, False, 1.0, 0.0)
    np.testing.assert_array_equal(c, 4.0)
    with pytest.raises(ValueError, match="shapes do not match"):
        _core.gemm(a, b, np.empty((3, 6), np.float32), False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="shapes do not match"):
        _core.gemm(a, b, c, True, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="a must be a C-contiguous 2-D float32"):
        _core.gemm(a.astype(np.float64), b, c, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="b must be a C-contiguous"):
        _core.gemm(a, np.asfortranarray(b), c, False, False, 1.0, 0.0)
    ro = c.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="c must be writeable"):
        _core.gemm(a, b, ro, False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="bias must have shape"):
        _core.gemm(a, b, c, False, False, 1.0, 0.0, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="mask must be"):
        _core.gemm(a, b, c, False, False, 1.0, 0.0, None, False, np.zeros(1, np.uint8))
    with pytest.raises(TypeError):
        _core.gemm(a.tolist(), b, c, False, False, 1.0, 0.0)


# ------------------------------------------------------- fused Dense backward
@pytest.mark.parametrize("m,n", [(1, 1), (3, 7), (17, 33), (128, 256), (64, 300), (5, 1027),
                                 (129, 10)])
@pytest.mark.parametrize("relu", [True, False])
def test_dense_backward_act_matches_reference(isa, threads, m, n, relu):
    """dz = (h > 0 | mask bit) ? grad*scale : 0 and db = column sums of dz, against NumPy;
    per-ISA mask-bit expansion (rows not byte-aligned when n % 8 != 0); 1 vs 2 threads
    bitwise; the mask is exactly ceil(m*n/8) bytes (no read past it)."""
    rng = np.random.default_rng(m * 1000 + n)
    g = rand((m, n), m + n)
    g[0, 0] = np.inf if relu else g[0, 0]
    h = np.maximum(rand((m, n), m + n + 1), 0)
    keep = rng.random(m * n) < 0.6
    mask = np.packbits(keep, bitorder="little")
    scale = np.float32(1.0 / 0.6)
    sel = (h > 0) if relu else keep.reshape(m, n)
    want = np.where(sel, g * scale, np.float32(0)).astype(np.float32)
    outs = []
    for t in (1, 2):
        threads(t)
        dz = np.full((m, n), np.nan, np.float32)
        db = np.full(n, np.nan, np.float32)
        _core.dense_backward_act(g, h if relu else None, None if relu else mask, scale, relu,
                                 dz, db)
        outs.append((dz, db))
    assert outs[0][0].tobytes() == outs[1][0].tobytes()
    assert outs[0][1].tobytes() == outs[1][1].tobytes()
    np.testing.assert_array_equal(outs[0][0], want)
    fin = np.isfinite(want).all(axis=0)
    ref_db = want.astype(np.float64).sum(axis=0)
    tol = (m + 2) * 2.0 ** -23 * np.abs(want.astype(np.float64)).sum(axis=0) + 1e-30
    assert (np.abs(outs[0][1][fin] - ref_db[fin]) <= tol[fin]).all()
    # db is the column sum of dz in row order: bitwise equal to colsum
    cs = np.empty(n, np.float32)
    _core.colsum(outs[0][0], cs)
    assert cs[fin].tobytes() == outs[0][1][fin].tobytes()

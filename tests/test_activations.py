"""Activation kernels (csrc/kernels/act.h) against the float64 NumPy reference
(fastdrop.reference.activations), finite differences, special values, threads and ISA
paths (bitwise), and the binding's argument checks."""
import numpy as np
import pytest

from fastdrop import _core
from fastdrop.reference import activations as RA

NAMES = RA.NAMES
#: kinks (or jumps) of the piecewise activations, at their default parameters
KINKS = {"relu": (0,), "relu6": (0, 6), "leaky_relu": (0,), "linear": (),
         "hard_sigmoid": (-3, 3), "hard_silu": (-3, 3), "hard_tanh": (-1, 1),
         "soft_shrink": (-0.5, 0.5), "hard_shrink": (-0.5, 0.5), "sparse_plus": (-1, 1),
         "sparse_sigmoid": (-1, 1), "threshold": (0,), "relu_args": (0,)}
SMOOTH = [n for n in NAMES if n not in KINKS]
PIECEWISE = [n for n in KINKS if n not in ("linear", "hard_shrink", "threshold")]


def sample(n=20000, seed=0):
    """Magnitudes from 1e-8 to 100 on both sides plus a dense [-8, 8] band."""
    rng = np.random.default_rng(seed)
    mag = np.exp(rng.uniform(np.log(1e-8), np.log(100.0), n))
    x = np.concatenate([mag, -mag, rng.uniform(-8, 8, n), [0.0, -0.0, 6.0, 1.0, -1.0]])
    return x.astype(np.float32)


def fwd(name, x, param=None):
    out = np.empty_like(x)
    _core.act_forward(name, x, out, param)
    return out


def bwd(name, g, z, y, param=None):
    out = np.empty_like(g)
    _core.act_backward(name, g, z, y, out, param)
    return out


def test_registry_matches_binding():
    assert _core.ACT_NEEDS == RA.NEEDS
    assert set(_core.ACT_CODES) == set(RA.NAMES)
    assert _core.ACT_PARAM_DEFAULT == RA.PARAM_DEFAULT
    assert RA.canonical("swish") == "silu"
    assert _core.ACT_ALIASES == RA.ALIASES
    x = np.linspace(-3, 3, 11).astype(np.float32)
    assert np.array_equal(fwd("swish", x), fwd("silu", x))
    with pytest.raises(ValueError, match="unknown activation"):
        RA.canonical("no_such_activation")


# ------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_float64(isa, name):
    """Relative error <= 1e-6 wherever the result is above 1e-30 (below, an intermediate
    such as sigmoid(-90) is subnormal and flushed to zero)."""
    x = sample()
    y = fwd(name, x)
    ref = RA.forward(name, x)
    big = np.abs(ref) > np.finfo(np.float32).max      # exponential: inf in float32
    assert np.array_equal(y[big], np.sign(ref[big]) * np.inf)
    x, y, ref = x[~big], y[~big], ref[~big]
    ok = np.abs(ref) > 1e-30
    rel = np.abs(y[ok] - ref[ok]) / np.abs(ref[ok])
    # tanh_shrink: x - tanh(x) cancels ~3 bits just above |x| = 0.625 (the series' end)
    tol = 2e-6 if name == "tanh_shrink" else 1e-6
    assert rel.max() <= tol, (name, x[ok][np.argmax(rel)], rel.max())
    small = ~ok & np.isfinite(ref)
    np.testing.assert_allclose(y[small], ref[small], rtol=0, atol=1e-30)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_float64(isa, name):
    """Backward equals the float64 formula from the same inputs (z, or the kernel's own
    float32 y) to 1e-6 of the size of its terms; against the true f'(z) the y-based
    derivatives differ by the rounding of y only (<= 2e-7 absolute)."""
    x = sample(seed=1)
    y = fwd(name, x)
    g = np.random.default_rng(2).uniform(0.5, 2.0, x.size).astype(np.float32)
    d = bwd(name, g, x, y)
    ref = RA.backward(name, g, x, y)
    # scale: the magnitudes summed (silu, gelu: s + z s (1 - s) has a zero crossing)
    xd = x.astype(np.float64)
    if name == "silu":
        s = RA._sigmoid(xd)
        scale = g * (s + np.abs(xd * s * (1 - s)))
    elif name == "gelu":
        scale = g * (RA._phi_cdf(xd) + np.abs(xd) * np.exp(-0.5 * xd * xd) * 0.3989422804)
    elif name == "gelu_tanh":
        v = 2 * np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3)
        sv = RA._sigmoid(v)
        scale = g * (sv + np.abs(xd) * 1.5957691 * (1 + 0.134145 * xd * xd) * sv *
                     RA._sigmoid(-v))
    elif name == "mish":
        t = np.tanh(np.logaddexp(0.0, xd))
        scale = g * (np.abs(t) + np.abs(xd * RA._sigmoid(xd) * (1 - t * t)))
    elif name == "hard_silu":
        scale = g * np.where(np.abs(xd) < 3, (2 * np.abs(xd) + 3) / 6, 1.0)
    else:
        scale = np.abs(ref)
    with np.errstate(invalid="ignore"):
        err = np.where(d == ref, 0.0, np.abs(d - ref))
    # exponential: g * e^z above the float32 range is inf (the reference is float64)
    err = np.where(np.abs(ref) > np.finfo(np.float32).max, 0.0, err)
    assert np.all(err <= 1e-6 * scale + 1e-30), (name, x[np.argmax(err - 1e-6 * scale)])
    true = g * RA.derivative(name, x)
    if RA.NEEDS[name] == "y":
        fin = (np.abs(true) <= np.finfo(np.float32).max) & np.isfinite(d)
        np.testing.assert_allclose(d[fin], true[fin], rtol=1e-6, atol=2e-7 * 2.0)


@pytest.mark.parametrize("name", SMOOTH)
def test_backward_finite_differences(name):
    rng = np.random.default_rng(3)
    x = rng.uniform(-5, 5, 4000).astype(np.float64)
    x = x[np.abs(x) > 0.05]                          # elu's kink at 0
    h = 1e-2
    xp, xm = (x + h).astype(np.float32), (x - h).astype(np.float32)
    fd = (fwd(name, xp).astype(np.float64) - fwd(name, xm).astype(np.float64)) / \
        (xp.astype(np.float64) - xm.astype(np.float64))
    x32 = x.astype(np.float32)
    g = np.ones_like(x32)
    d = bwd(name, g, x32, fwd(name, x32))
    np.testing.assert_allclose(d, fd, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", PIECEWISE)
def test_backward_finite_differences_piecewise(name):
    """Away from the kinks, the piecewise-smooth activations' backward is their slope."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-8, 8, 4000).astype(np.float64)
    for k in KINKS[name]:
        x = x[np.abs(x - k) > 0.05]
    h = 1e-2
    xp, xm = (x + h).astype(np.float32), (x - h).astype(np.float32)
    fd = (fwd(name, xp).astype(np.float64) - fwd(name, xm).astype(np.float64)) / \
        (xp.astype(np.float64) - xm.astype(np.float64))
    x32 = x.astype(np.float32)
    d = bwd(name, np.ones_like(x32), x32, fwd(name, x32))
    np.testing.assert_allclose(d, fd, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name,param", [
    ("celu", 0.5), ("celu", 3.0), ("soft_shrink", 1.5), ("hard_shrink", 0.0),
    ("squareplus", 0.0), ("squareplus", 1.0), ("threshold", (0.5, -2.0)),
    ("threshold", (-1.0, 3.0)), ("relu_args", (0.1, 6.0, 0.0)),
    ("relu_args", (0.0, 2.5, 0.5)), ("relu_args", (0.3, np.inf, -1.0)),
    ("relu_args", (0.2, 4.0, 1.0))])
def test_param_multi(isa, name, param):
    """The parameterised new activations, forward and backward, against the reference
    (backward away from the kinks) and finite differences."""
    x = sample(2000, 4)
    y = fwd(name, x, param)
    np.testing.assert_allclose(y, RA.forward(name, x, param), rtol=2e-6, atol=1e-30)
    g = np.ones_like(x)
    d = bwd(name, g, x, y, param)
    # from y: f' = y/alpha + 1 (celu) is exact for the float32 y, ~6e-8 absolute from z
    np.testing.assert_allclose(d, RA.backward(name, g, x, y, param), rtol=1e-6, atol=2e-7)
    rng = np.random.default_rng(7)
    xs = rng.uniform(-8, 8, 3000)
    p = param if isinstance(param, tuple) else (param,)
    if name == "relu_args":
        kinks = [0.0, p[1], p[2]]
    elif name in ("celu", "squareplus"):
        kinks = [0.0]
    elif name == "threshold":
        kinks = [p[0]]
    else:
        kinks = [p[0], -p[0]]
    for k in kinks:
        xs = xs[np.abs(xs - k) > 0.05]
    h = 1e-2
    xp, xm = (xs + h).astype(np.float32), (xs - h).astype(np.float32)
    fd = (fwd(name, xp, param).astype(np.float64) - fwd(name, xm, param).astype(np.float64)) \
        / (xp.astype(np.float64) - xm.astype(np.float64))
    x32 = xs.astype(np.float32)
    d = bwd(name, np.ones_like(x32), x32, fwd(name, x32, param), param)
    np.testing.assert_allclose(d, fd, rtol=2e-3, atol=2e-4)


def test_keras_relu_matches_reference_formula():
    """relu_args is Keras's relu(x, negative_slope, max_value, threshold) (its code path
    written out: where(x > t, x, 0), clip to [0, max_value], minus slope relu(t - x))."""
    x = np.linspace(-4, 8, 241).astype(np.float32)
    for s, mx, t in [(0.1, 6.0, 0.0), (0.0, 2.5, 0.5), (0.3, np.inf, -1.0), (0.2, 4.0, 1.0)]:
        a = np.where(x > t, x, 0.0)
        if mx < np.inf:
            a = np.clip(a, 0.0, mx)
        want = a - s * np.maximum(t - x, 0.0)
        np.testing.assert_allclose(fwd("relu_args", x, (s, mx, t)), want, rtol=1e-6,
                                   atol=1e-7)


@pytest.mark.parametrize("name,param", [("leaky_relu", 0.01), ("leaky_relu", 0.0),
                                        ("elu", 0.5), ("elu", 2.0)])
def test_param(isa, name, param):
    x = sample(2000, 4)
    y = fwd(name, x, param)
    np.testing.assert_allclose(y, RA.forward(name, x, param), rtol=1e-6, atol=1e-37)
    g = np.ones_like(x)
    d = bwd(name, g, None, y, param)
    np.testing.assert_allclose(d, RA.backward(name, g, None, y, param), rtol=1e-6)
    np.testing.assert_allclose(d, RA.derivative(name, x, param), rtol=1e-6, atol=3e-7)


def test_keras_defaults():
    x = np.array([-1.0], np.float32)
    assert fwd("leaky_relu", x)[0] == np.float32(-0.2)       # Keras 3 negative_slope
    assert fwd("elu", x)[0] == pytest.approx(np.expm1(-1.0), rel=1e-7)
    # gelu is Keras' approximate=False (erf form), gelu_tanh approximate=True
    import math
    assert fwd("gelu", x)[0] == pytest.approx(-0.5 * (1 + math.erf(-1 / math.sqrt(2))),
                                              rel=1e-6)
    t = -0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (-1 - 0.044715)))
    assert fwd("gelu_tanh", x)[0] == pytest.approx(t, rel=1e-6)


# ------------------------------------------------------------ special values
SPECIAL_FWD = {
    # name: values at [-inf, inf, -0, +0, -1e30, 1e30, 100, -100]
    "linear": [-np.inf, np.inf, -0.0, 0.0, -1e30, 1e30, 100, -100],
    "relu": [0, np.inf, 0, 0, 0, 1e30, 100, 0],
    "relu6": [0, 6, 0, 0, 0, 6, 6, 0],
    "leaky_relu": [-np.inf, np.inf, -0.0, 0, -2e29, 1e30, 100, -20],
    "elu": [-1, np.inf, -0.0, 0, -1, 1e30, 100, -1],
    "tanh": [-1, 1, -0.0, 0, -1, 1, 1, -1],
    "sigmoid": [0, 1, 0.5, 0.5, 0, 1, 1, 0],
    "softplus": [0, np.inf, np.log(2), np.log(2), 0, 1e30, 100, 0],
    "silu": [-0.0, np.inf, -0.0, 0, -0.0, 1e30, 100, -0.0],
    "gelu": [-0.0, np.inf, -0.0, 0, -0.0, 1e30, 100, -0.0],
    "gelu_tanh": [-0.0, np.inf, -0.0, 0, -0.0, 1e30, 100, -0.0],
    "hard_sigmoid": [0, 1, 0.5, 0.5, 0, 1, 1, 0],
    "softsign": [-1, 1, -0.0, 0, -1, 1, 100 / 101, -100 / 101],
    "mish": [-0.0, np.inf, -0.0, 0, -0.0, 1e30, 100, -0.0],
    "celu": [-1, np.inf, -0.0, 0, -1, 1e30, 100, -1],
    "hard_silu": [-0.0, np.inf, -0.0, 0, -0.0, 1e30, 100, -0.0],
    "hard_tanh": [-1, 1, -0.0, 0, -1, 1, 1, -1],
    "soft_shrink": [-np.inf, np.inf, 0, 0, -1e30, 1e30, 99.5, -99.5],
    "hard_shrink": [-np.inf, np.inf, 0, 0, -1e30, 1e30, 100, -100],
    "tanh_shrink": [-np.inf, np.inf, -0.0, 0, -1e30, 1e30, 99, -99],
    "log_sigmoid": [-np.inf, 0, -np.log(2), -np.log(2), -1e30, 0, 0, -100],
    "exponential": [0, np.inf, 1, 1, 0, np.inf, np.inf, 0],
    "sparse_plus": [0, np.inf, 0.25, 0.25, 0, 1e30, 100, 0],
    "squareplus": [0, np.inf, 1, 1, 1e-30, 1e30, 100.009999, 0.0099990002],
    "threshold": [0, np.inf, 0, 0, 0, 1e30, 100, 0],
    "relu_args": [0, np.inf, 0, 0, 0, 1e30, 100, 0],
    "sparse_sigmoid": [0, 1, 0.5, 0.5, 0, 1, 1, 0],
    "selu": [-1.7580993, np.inf, -0.0, 0, -1.7580993, 1.0507010e30, 105.07010, -1.7580993],
}
#: NaN in, not NaN out (a select on x, as Keras/PyTorch: threshold gives its default)
NAN_SELECTS = ("threshold",)
#: derivative selects 0 / a constant for NaN (as relu does)
NAN_BWD_SELECTS = ("relu", "relu6", "leaky_relu", "elu", "linear", "hard_sigmoid",
                   "hard_silu", "hard_tanh", "soft_shrink", "hard_shrink", "sparse_plus",
                   "threshold", "relu_args", "sparse_sigmoid", "celu", "selu")
SPECIAL_X = np.array([-np.inf, np.inf, -0.0, 0.0, -1e30, 1e30, 100, -100], np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_special_values(isa, name):
    y = fwd(name, SPECIAL_X)
    want = np.array(SPECIAL_FWD[name], np.float32)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)
    # signed zeros where the limit is one
    zero = want == 0
    assert np.array_equal(np.signbit(y[zero]), np.signbit(want[zero])), (y, want)
    # NaN propagates forward and backward
    nan = np.array([np.nan], np.float32)
    assert np.isnan(fwd(name, nan)[0]) or name in NAN_SELECTS
    assert np.isnan(bwd(name, np.ones(1, np.float32), nan, nan)[0]) or name in \
        NAN_BWD_SELECTS
    # backward at the extremes: finite (exponential: e^x itself), the limit of f'
    g = np.ones_like(SPECIAL_X)
    d = bwd(name, g, SPECIAL_X, y)
    if name == "exponential":
        np.testing.assert_array_equal(d, y)
        return
    assert np.all(np.isfinite(d)), (name, d)
    lim = RA.derivative(name, SPECIAL_X[[0, 1]])
    np.testing.assert_allclose(d[[0, 1]], lim, atol=1e-7)


def test_nan_in_grad_propagates():
    x = np.array([0.5, -0.5], np.float32)
    g = np.array([np.nan, np.nan], np.float32)
    for name in NAMES:
        d = bwd(name, g, x, fwd(name, x))
        # where f' = 0 the kernels select 0 (as relu_backward and PyTorch do)
        nonzero = RA.derivative(name, x) != 0
        assert np.isnan(d[nonzero]).all(), name


# -------------------------------------------------- threads, ISA paths, aliasing
N_BIG = 1_000_003


def test_thread_invariant(threads):
    x = np.random.default_rng(5).standard_normal(N_BIG).astype(np.float32) * 4
    g = np.random.default_rng(6).standard_normal(N_BIG).astype(np.float32)
    for name in NAMES:
        res = []
        for t in (1, 2):
            threads(t)
            y = fwd(name, x)
            res.append((y, bwd(name, g, x, y)))
        for a, b in zip(*res):
            assert np.array_equal(a, b, equal_nan=True), name


def test_isa_paths_bitwise_identical():
    isas = _core.isa_supported()
    old = _core.isa()
    x = sample(3000, 7)
    g = np.random.default_rng(8).standard_normal(x.size).astype(np.float32)
    try:
        outs = {}
        for isa in isas:
            _core.set_isa(isa)
            outs[isa] = [(fwd(n, x), bwd(n, g, x, fwd(n, x))) for n in NAMES]
    finally:
        _core.set_isa(old)
    base = outs[isas[0]]
    for isa in isas[1:]:
        for name, a, b in zip(NAMES, base, outs[isa]):
            assert np.array_equal(a[0], b[0], equal_nan=True), (isa, name, "forward")
            assert np.array_equal(a[1], b[1], equal_nan=True), (isa, name, "backward")


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 33, 1000, 70001])
def test_in_place_and_sizes(isa, n):
    x = (np.random.default_rng(n).standard_normal(n) * 3).astype(np.float32)
    g = np.random.default_rng(n + 1).standard_normal(n).astype(np.float32)
    for name in NAMES:
        y = fwd(name, x)
        d = bwd(name, g, x, y)
        xi = x.copy()
        _core.act_forward(name, xi, xi)
        assert np.array_equal(xi, y), name
        gi = g.copy()
        _core.act_backward(name, gi, x, y, gi)
        assert np.array_equal(gi, d), name
        # element i depends on element i only (no cross-lane mixing at the edges)
        np.testing.assert_array_equal(fwd(name, x[n // 2:]), y[n // 2:])


def test_empty():
    e = np.empty(0, np.float32)
    for name in NAMES:
        _core.act_forward(name, e, e)
        _core.act_backward(name, e, e, e, e)


# ------------------------------------------------------------------- errors
def test_bad_arguments():
    x = np.ones(4, np.float32)
    out = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="unknown activation 'no_such'"):
        _core.act_forward("no_such", x, out)
    with pytest.raises(ValueError, match="out has 3 elements, x has 4"):
        _core.act_forward("tanh", x, out[:3])
    with pytest.raises(ValueError, match="needs the pre-activation z"):
        _core.act_backward("gelu", x, None, x, out)
    with pytest.raises(ValueError, match="needs the output y"):
        _core.act_backward("tanh", x, x, None, out)
    with pytest.raises(ValueError, match="y has 3 elements"):
        _core.act_backward("sigmoid", x, None, x[:3], out)
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        _core.act_forward("leaky_relu", x, out, -0.1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        _core.act_forward("elu", x, out, 0.0)
    with pytest.raises(ValueError):
        _core.act_forward("tanh", x.astype(np.float64), out)
    with pytest.raises(ValueError):          # read-only out
        ro = np.ones(4, np.float32)
        ro.flags.writeable = False
        _core.act_forward("tanh", x, ro)


def test_denormals_flushed_inside_and_restored():
    """FTZ/DAZ inside the kernels (fpenv.h); the caller's state is restored after."""
    x = np.array([1e-40, -1e-40, 1e-39], np.float32)        # subnormal inputs
    # (maps that select x itself, as relu or elu for x >= 0, pass the bits through: a
    # move costs nothing; every arithmetic result is flushed)
    for name in ("tanh", "silu", "leaky_relu", "gelu", "sigmoid"):
        y = fwd(name, x)
        want = RA.forward(name, np.zeros(3, np.float32))
        assert np.all(y == want), (name, y)
    sub = np.float32(1e-40) * np.float32(1.0)                  # NumPy: not flushed
    assert sub != 0

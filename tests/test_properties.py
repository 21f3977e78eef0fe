"""Property tests (hypothesis) of every public kernel in ``fastdrop.kernels`` against
``fastdrop.reference``: random shapes (including 1), random SIMD path, random values with
±inf/NaN/±0/subnormals where the result is defined, random strided views (rejected with
ValueError unless the view happens to be C-contiguous), empty arrays (ValueError).

Defined special-value behaviour asserted here:
  relu             max(x, 0): +inf -> +inf, -inf -> 0, -0.0 -> +0.0; NaN -> NaN as the
                   reference (the kernels give 0 today: test_relu_propagates_nan, xfail)
  relu_backward    grad where y > 0 else 0 (NaN y -> 0; NaN/inf grad propagates if y > 0)
  bias_add         IEEE float32 x + bias, exactly (inf + -inf = NaN)
  dropout(_backward)  kept: x * scale (NaN/inf propagate), dropped: +0.0, bit for bit
  gemm             a NaN in row i of op(a) makes row i of the output NaN; beta == 0 never
                   reads out (NaN there does not propagate); finite inputs within the
                   float32 summation error bound of the float64 product
  softmax(_cross_entropy)  finite inputs of any magnitude (inf logits are undefined)
Each test is ``max_examples=50``; values are generated with NumPy from a drawn seed, so
large arrays stay cheap.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastdrop import _core, kernels as K, reference as R


@pytest.fixture(autouse=True, scope="module")
def _ieee_subnormals():
    """These properties compare against IEEE NumPy bit for bit, subnormals included: run
    the kernels with flushing off (flushing itself is tested in test_fpenv.py)."""
    old = _core.get_flush_denormals()
    _core.set_flush_denormals(False)
    yield
    _core.set_flush_denormals(old)

ISAS = _core.isa_supported()
SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
F32 = np.float32
TINY = np.finfo(F32).tiny
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, TINY / 4, -TINY / 3, TINY,
                     np.finfo(F32).max, -np.finfo(F32).max, 1.0, -1.0], F32)

isas = st.sampled_from(ISAS)
seeds = st.integers(0, 2**32 - 1)
rates = st.one_of(st.sampled_from([0.0, 0.5, 0.999999, 1.0 / 3.0, 2.0**-32, 1 - 2.0**-30]),
                  st.floats(0.0, 1.0, exclude_max=True))
rng_seeds = st.integers(0, 2**64 - 1)
sizes = st.one_of(st.integers(1, 40), st.integers(1, 20_000))


@contextlib.contextmanager
def on_isa(name):
    old = _core.isa()
    _core.set_isa(name)
    try:
        yield
    finally:
        _core.set_isa(old)


def values(seed, shape, specials=False, scale=1.0):
    """float32 array: normal * scale, optionally with ~10% special values sprinkled in."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(F32)
    if specials and x.size:
        k = rng.integers(0, x.size // 10 + 2)
        idx = rng.integers(0, x.size, k)
        x.reshape(-1)[idx] = rng.choice(SPECIALS, k)
    return x


def shapes_nd(max_dims=3, max_side=40):
    return st.lists(st.integers(1, max_side), min_size=1, max_size=max_dims).map(tuple)


def same(a, b):
    """Bitwise equality, except that any NaN equals any NaN (payloads may differ)."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    assert a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32))


# ------------------------------------------------------------------ elementwise
@SETTINGS
@given(isa=isas, shape=shapes_nd(), seed=seeds)
def test_relu_matches_reference_finite_and_inf(isa, shape, seed):
    x = values(seed, shape, specials=True)
    x[np.isnan(x)] = np.inf
    with on_isa(isa):
        y = K.relu(x)
        np.testing.assert_array_equal(y, R.relu(x))       # -0.0 vs +0.0 not distinguished
        assert not np.signbit(y).any()
        z = x.copy()
        assert K.relu(z, out=z) is z
        np.testing.assert_array_equal(z, y)


@pytest.mark.parametrize("isa", ISAS)
def test_relu_propagates_nan(isa):
    x = np.array([np.nan, 1.0, -1.0] * 11, F32)
    with on_isa(isa):
        y = K.relu(x)
    same(y, R.relu(x))


@SETTINGS
@given(isa=isas, shape=shapes_nd(), seed=seeds)
def test_relu_backward_matches_reference(isa, shape, seed):
    y = values(seed, shape, specials=True)
    g = values(seed + 1, shape, specials=True)
    with on_isa(isa):
        same(K.relu_backward(g, y), R.relu_backward(g, y))
        same(K.relu_backward(g, K.relu(y)), R.relu_backward(g, R.relu(y)))


@SETTINGS
@given(isa=isas, m=st.integers(1, 70), n=st.integers(1, 300), seed=seeds,
       specials=st.booleans())
def test_bias_add_is_exact_float32_add(isa, m, n, seed, specials):
    x = values(seed, (m, n), specials)
    b = values(seed + 1, n, specials)
    with np.errstate(invalid="ignore", over="ignore"):
        want = R.bias_add(x, b)
    with on_isa(isa):
        same(K.bias_add(x, b), want)
        out = x.copy()
        assert K.bias_add(out, b, out=out) is out
        same(out, want)


# ------------------------------------------------------------------ softmax / loss
@SETTINGS
@given(isa=isas, n=st.integers(1, 60), c=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e30]))
def test_softmax_matches_reference(isa, n, c, seed, scale):
    x = values(seed, (n, c), scale=scale)
    with on_isa(isa):
        p = K.softmax(x)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p, R.softmax(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=1e-5)


@SETTINGS
@given(isa=isas, n=st.integers(1, 60), c=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e30]),
       targets=st.sampled_from(["int64", "int32", "uint8", "onehot", "soft"]))
def test_softmax_cross_entropy_matches_reference(isa, n, c, seed, scale, targets):
    assume(not (targets == "uint8" and c > 255))
    rng = np.random.default_rng(seed)
    x = values(seed, (n, c), scale=scale)
    idx = rng.integers(0, c, n)
    if targets == "onehot":
        labels = np.eye(c, dtype=F32)[idx]
    elif targets == "soft":
        t = rng.random((n, c))
        labels = (t / t.sum(axis=1, keepdims=True)).astype(F32)
    else:
        labels = idx.astype(targets)
    with on_isa(isa):
        loss, grad = K.softmax_cross_entropy(x, labels)
    rloss, rgrad = R.softmax_cross_entropy(x, labels)
    assert isinstance(loss, float) and np.isfinite(loss) and loss >= -1e-6
    assert np.isclose(loss, rloss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, rgrad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- gemm
def _gemm_args(seed, m, n, k, ta, tb, specials=False):
    a = values(seed, (k, m) if ta else (m, k))
    b = values(seed + 1, (n, k) if tb else (k, n))
    return a, b


def _gemm_bound(a, b, ta, tb, alpha, beta, c0, k):
    A = np.abs(a.astype(np.float64))
    B = np.abs(b.astype(np.float64))
    mag = abs(alpha) * ((A.T if ta else A) @ (B.T if tb else B))
    if beta != 0:
        mag = mag + abs(beta) * np.abs(c0.astype(np.float64))
    return 2.0 * (k + 4) * 2.0**-24 * mag + 1e-30


@SETTINGS
@given(isa=isas, m=st.integers(1, 90), n=st.integers(1, 90),
       k=st.one_of(st.integers(1, 40), st.integers(1, 700)), ta=st.booleans(),
       tb=st.booleans(), seed=seeds,
       alpha=st.sampled_from([1.0, -0.5, 3.0]), beta=st.sampled_from([0.0, 1.0, -2.0]))
def test_gemm_within_error_bound(isa, m, n, k, ta, tb, seed, alpha, beta):
    a, b = _gemm_args(seed, m, n, k, ta, tb)
    c0 = values(seed + 2, (m, n))
    want = R.gemm(a, b, c0, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    bound = _gemm_bound(a, b, ta, tb, alpha, beta, c0, k)
    with on_isa(isa):
        out = c0.copy()
        got = K.gemm(a, b, out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
        assert got is out
        if beta == 0.0:
            np.testing.assert_array_equal(K.gemm(a, b, trans_a=ta, trans_b=tb, alpha=alpha),
                                          got)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert (err <= bound).all(), f"max err/bound {np.max(err / bound)}"


@SETTINGS
@given(isa=isas, m=st.integers(1, 50), n=st.integers(1, 50), k=st.integers(1, 300),
       ta=st.booleans(), tb=st.booleans(), seed=seeds)
def test_gemm_nan_rows_propagate_and_beta0_ignores_out(isa, m, n, k, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a, b = _gemm_args(seed, m, n, k, ta, tb)
    rows = rng.random(m) < 0.3
    cols = rng.integers(0, k, m)
    for i in np.flatnonzero(rows):
        if ta:
            a[cols[i], i] = np.nan
        else:
            a[i, cols[i]] = np.nan
    out = np.full((m, n), np.nan, F32)          # beta == 0: must not be read
    with on_isa(isa):
        K.gemm(a, b, out, trans_a=ta, trans_b=tb)
    assert np.isnan(out[rows]).all()
    assert np.isfinite(out[~rows]).all()


# ------------------------------------------------------------------------ dropout
@SETTINGS
@given(isa=isas, shape=st.one_of(shapes_nd(3, 30), sizes.map(lambda n: (n,))), seed=rng_seeds,
       vseed=seeds, rate=rates, specials=st.booleans(), in_place=st.booleans())
def test_dropout_bitwise_equals_reference(isa, shape, seed, vseed, rate, specials, in_place):
    x = values(vseed, shape, specials)
    with np.errstate(over="ignore", invalid="ignore"):     # 3e38 * scale -> inf is defined
        want, want_mask = R.dropout(x, rate, seed)
    with on_isa(isa):
        if in_place:
            buf = x.copy()
            y, mask = K.dropout(buf, rate, seed, out=buf)
            assert y is buf
        else:
            y, mask = K.dropout(x, rate, seed)
    np.testing.assert_array_equal(mask, want_mask)
    same(y, want)
    keep = np.unpackbits(mask, count=x.size, bitorder="little").view(bool).reshape(shape)
    assert (y[~keep].view(np.uint32) == 0).all()         # dropped: exactly +0.0


@SETTINGS
@given(isa=isas, n=sizes, seed=seeds, rate=rates, specials=st.booleans(),
       random_mask=st.booleans())
def test_dropout_backward_bitwise_equals_reference(isa, n, seed, rate, specials, random_mask):
    g = values(seed, n, specials)
    if random_mask:     # any bytes, pad bits included, are a valid mask
        mask = np.random.default_rng(seed).integers(0, 256, K.mask_nbytes(n), dtype=np.uint8)
    else:
        mask = K.dropout_mask(n, rate, seed)
    with np.errstate(over="ignore", invalid="ignore"):
        want = R.dropout_backward(g, mask, rate)
    with on_isa(isa):
        same(K.dropout_backward(g, mask, rate), want)


@SETTINGS
@given(isa=isas, n=st.one_of(st.integers(0, 40), st.integers(0, 30_000)), seed=rng_seeds,
       rate=rates)
def test_dropout_mask_bits_equal_reference(isa, n, seed, rate):
    with on_isa(isa):
        mask = K.dropout_mask(n, rate, seed)
    assert mask.dtype == np.uint8 and mask.shape == (K.mask_nbytes(n),)
    np.testing.assert_array_equal(mask, R.dropout_mask(n, seed, rate))
    if n % 8:
        assert mask[-1] >> (n % 8) == 0                  # pad bits zero
    if rate == 0.0 and n:
        assert np.unpackbits(mask, count=n, bitorder="little").all()


@SETTINGS
@given(n=st.integers(0, 2**40))
def test_mask_nbytes(n):
    assert K.mask_nbytes(n) == -(-n // 8)


@SETTINGS
@given(rate=st.one_of(st.floats(max_value=0.0, exclude_max=True), st.floats(min_value=1.0),
                      st.just(float("nan"))),
       seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)))
def test_bad_rate_and_seed_raise_value_error(rate, seed):
    x = np.ones(5, F32)
    with pytest.raises(ValueError, match="rate"):
        K.dropout(x, rate, 1)
    with pytest.raises(ValueError, match="rate"):
        K.dropout_mask(5, rate, 1)
    with pytest.raises(ValueError, match="rate"):
        K.dropout_backward(x, np.zeros(1, np.uint8), rate)
    with pytest.raises(ValueError, match="seed"):
        K.dropout(x, 0.5, seed)
    with pytest.raises(ValueError, match="seed"):
        K.dropout_mask(5, 0.5, seed)


# ------------------------------------------------ layout: empty and strided arrays
def _valid_call(name, rng, dims):
    """(callable, list of (arg index, array)) for kernel `name` with random sizes `dims`."""
    m, n, k = dims
    f = lambda *s: (rng.standard_normal(s) if s else rng.standard_normal()).astype(F32)  # noqa
    if name == "gemm":
        return (lambda a, b, out: K.gemm(a, b, out)), [f(m, k), f(k, n), np.empty((m, n), F32)]
    if name == "relu":
        return (lambda x, out: K.relu(x, out)), [f(m, n), np.empty((m, n), F32)]
    if name == "relu_backward":
        return (lambda g, y, out: K.relu_backward(g, y, out)), [f(m, n), f(m, n),
                                                               np.empty((m, n), F32)]
    if name == "bias_add":
        return (lambda x, b, out: K.bias_add(x, b, out)), [f(m, n), f(n), np.empty((m, n), F32)]
    if name == "softmax":
        return (lambda x, out: K.softmax(x, out)), [f(m, n), np.empty((m, n), F32)]
    if name == "softmax_cross_entropy":
        return (lambda x, t: K.softmax_cross_entropy(x, t)), [f(m, n), np.eye(n, dtype=F32)[
            rng.integers(0, n, m)]]
    if name == "dropout":
        return (lambda x, out: K.dropout(x, 0.3, 7, out=out)), [f(m, n), np.empty((m, n), F32)]
    if name == "dropout_backward":
        return (lambda g, mask, out: K.dropout_backward(g, mask, 0.3, out)), [
            f(m, n), K.dropout_mask(m * n, 0.3, 7), np.empty((m, n), F32)]
    raise AssertionError(name)


KERNELS = ["gemm", "relu", "relu_backward", "bias_add", "softmax", "softmax_cross_entropy",
           "dropout", "dropout_backward"]


def _strided_copy(a, how, step):
    """A view with a's shape and values whose memory is not laid out in C order (unless
    numpy considers it contiguous anyway, e.g. a step over an axis of length 1)."""
    if how == "transpose" and a.ndim == 2:
        return np.ascontiguousarray(a.T).T
    big = np.zeros(a.shape[:-1] + (a.shape[-1] * step,), a.dtype)
    v = big[..., ::step]
    if how == "rows" and a.ndim == 2:
        big = np.zeros((a.shape[0] * step,) + a.shape[1:], a.dtype)
        v = big[::step]
    v[...] = a
    return v


def _result(r):
    return r if isinstance(r, tuple) else (r,)


@SETTINGS
@given(name=st.sampled_from(KERNELS), dims=st.tuples(*[st.integers(1, 9)] * 3), seed=seeds,
       how=st.sampled_from(["cols", "rows", "transpose"]), step=st.integers(2, 3),
       data=st.data())
def test_non_contiguous_views_are_rejected(name, dims, seed, how, step, data):
    rng = np.random.default_rng(seed)
    call, args = _valid_call(name, rng, dims)
    want = [np.copy(r) if isinstance(r, np.ndarray) else r for r in _result(call(*args))]
    i = data.draw(st.integers(0, len(args) - 1), label="argument")
    args2 = list(args)
    args2[i] = _strided_copy(args[i], how, step)
    assert args2[i].shape == args[i].shape
    if args2[i].flags.c_contiguous:    # numpy calls some strided views contiguous: accepted
        got = _result(call(*args2))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    else:
        with pytest.raises(ValueError, match="contiguous"):
            call(*args2)


@SETTINGS
@given(name=st.sampled_from(KERNELS), dims=st.tuples(*[st.integers(1, 5)] * 3), seed=seeds,
       data=st.data())
def test_empty_arrays_raise_value_error(name, dims, seed, data):
    rng = np.random.default_rng(seed)
    call, args = _valid_call(name, rng, dims)
    i = data.draw(st.integers(0, len(args) - 1), label="argument")
    if args[i].dtype != F32:
        return                              # the mask: its size follows from grad's
    axis = data.draw(st.integers(0, args[i].ndim - 1), label="axis")
    shape = list(args[i].shape)
    shape[axis] = 0
    args[i] = np.empty(shape, F32)
    with pytest.raises(ValueError):
        call(*args)


@pytest.mark.parametrize("call", [
    lambda: K.gemm(np.empty((0, 3), F32), np.ones((3, 2), F32)),
    lambda: K.gemm(np.ones((2, 0), F32), np.empty((0, 2), F32)),
    lambda: K.relu(np.empty(0, F32)),
    lambda: K.relu_backward(np.empty((0, 4), F32), np.empty((0, 4), F32)),
    lambda: K.bias_add(np.empty((0, 3), F32), np.ones(3, F32)),
    lambda: K.softmax(np.empty((4, 0), F32)),
    lambda: K.softmax_cross_entropy(np.empty((0, 3), F32), np.empty(0, np.int64)),
    lambda: K.dropout(np.empty((3, 0), F32), 0.5, 1),
    lambda: K.dropout_backward(np.empty(0, F32), np.empty(0, np.uint8), 0.5),
], ids=["gemm-m0", "gemm-k0", "relu", "relu_backward", "bias_add", "softmax", "xent",
        "dropout", "dropout_backward"])
def test_empty_inputs_rejected(call):
    with pytest.raises(ValueError, match="empty"):
        call()


def test_dropout_mask_of_zero_elements_is_empty():
    m = K.dropout_mask(0, 0.5, 3)
    assert m.dtype == np.uint8 and m.shape == (0,)

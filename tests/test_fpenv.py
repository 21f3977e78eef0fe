"""Floating-point environment inside the kernels (csrc/fpenv.h).

* Every kernel restores the caller's MXCSR exactly (read through _core.get_mxcsr), whether
  the caller had flush-to-zero off (the default) or on.
* With fastdrop.set_flush_denormals(True) (the default) subnormal inputs are read as zero
  (DAZ) and subnormal results flushed to zero (FTZ) inside the kernels, on the calling
  thread and on helper threads (large, multi-threaded calls); with it off the kernels give
  IEEE results (the NumPy answer).
* Results are bitwise equal for 1 and 2 threads either way.
Nothing here is timed (the Adam-with-subnormal-moments speed is in bench/bench_kernels.py).
"""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core, kernels as K

TINY = np.float32(1e-40)  # subnormal float32
DEFAULT_MXCSR = 0x1F80

x86 = _core.get_mxcsr() >= 0
pytestmark = pytest.mark.skipif(not x86, reason="MXCSR is x86-only")


@pytest.fixture
def flush():
    old = fastdrop.get_flush_denormals()
    yield
    fastdrop.set_flush_denormals(old)
    _core.set_num_threads(0)


def kernel_calls():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 500)).astype(np.float32)
    big = rng.standard_normal(1 << 19).astype(np.float32)
    out = np.empty_like(big)
    mask = np.zeros(((1 << 19) + 7) // 8, np.uint8)
    m = np.zeros_like(big)
    v = np.zeros_like(big)
    w = big.copy()
    logits = rng.standard_normal((256, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 256)
    grad = np.empty_like(logits)
    return [
        ("gemm", lambda: K.gemm(a, b)),
        ("gemm_row", lambda: K.gemm(a[:1], b)),
        ("gemm_skinny", lambda: K.gemm(a, np.ascontiguousarray(b[:, :10]))),
        ("relu", lambda: _core.relu(big, out)),
        ("dropout", lambda: _core.dropout_forward(big, out, 7, 0.5, mask)),
        ("dropout_apply", lambda: _core.dropout_apply(big, mask, out, 2.0)),
        ("adam", lambda: _core.adam_update(w, big, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 1)),
        ("sgd", lambda: _core.sgd_update(w, big, v, 1e-3, 0.9, False, 0.0)),
        ("xent", lambda: _core.softmax_xent_labels(logits, labels, 1.0, grad)),
        ("colsum", lambda: _core.colsum(a, np.empty(200, np.float32))),
        ("gaussian", lambda: _core.gaussian_noise(out, 3, 0.5)),
    ]


@pytest.mark.parametrize("caller", [DEFAULT_MXCSR, DEFAULT_MXCSR | 0x8040])
@pytest.mark.parametrize("threads", [1, 2])
def test_caller_mxcsr_is_restored(flush, caller, threads):
    _core.set_num_threads(threads)
    before = _core.get_mxcsr()
    try:
        for on in (True, False):
            fastdrop.set_flush_denormals(on)
            for name, call in kernel_calls():
                _core.set_mxcsr(caller)
                call()
                got = _core.get_mxcsr()
                # control bits (exception flags 0x3f may be raised by the bindings' conversions)
                assert got & ~0x3F == caller & ~0x3F, f"{name}: MXCSR {got:#x} after the call, {caller:#x} before"
    finally:
        _core.set_mxcsr(before)
    # NumPy keeps IEEE subnormals after fastdrop calls
    assert np.float32(1e-20) * np.float32(1e-20) != 0


@pytest.mark.parametrize("threads", [1, 2])
def test_relu_subnormal_inputs(flush, threads):
    _core.set_num_threads(threads)
    x = np.full(1 << 20, TINY, np.float32)  # large: helper threads take chunks too
    x[::3] = -TINY
    out = np.empty_like(x)
    fastdrop.set_flush_denormals(True)
    _core.relu(x, out)
    assert not out.any(), "DAZ: subnormal inputs must read as zero"
    fastdrop.set_flush_denormals(False)
    _core.relu(x, out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))


@pytest.mark.parametrize("shape", [(256, 256, 128), (1, 2048, 512), (300, 10, 64)])
def test_gemm_subnormal_results(flush, shape):
    m, n, k = shape
    a = np.full((m, k), 1e-21, np.float32)
    b = np.full((k, n), 1e-21, np.float32)  # products 1e-42, sums ~1e-40: subnormal
    ieee = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    assert 0 < ieee.max() < np.finfo(np.float32).tiny
    res = {}
    for on in (True, False):
        fastdrop.set_flush_denormals(on)
        for t in (1, 2):
            _core.set_num_threads(t)
            res[on, t] = K.gemm(a, b)
        np.testing.assert_array_equal(res[on, 1], res[on, 2])
    assert not res[True, 1].any(), "FTZ: subnormal products must flush to zero"
    np.testing.assert_allclose(res[False, 1], ieee, rtol=1e-2, atol=0)


def test_adam_subnormal_moments(flush):
    n = 1 << 18
    g = np.zeros(n, np.float32)
    for on, expect_zero in ((True, True), (False, False)):
        fastdrop.set_flush_denormals(on)
        w = np.ones(n, np.float32)
        m = np.full(n, 1e-39, np.float32)
        v = np.full(n, 1e-39, np.float32)
        _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 10)
        if expect_zero:
            assert not m.any() and not v.any()
        else:  # IEEE: m *= 0.9 stays subnormal and non-zero
            np.testing.assert_array_equal(m, (np.float32(1e-39) * np.float32(0.9)))


def test_switch_is_documented_and_returns_previous(flush):
    assert fastdrop.set_flush_denormals.__doc__
    fastdrop.set_flush_denormals(True)
    assert fastdrop.set_flush_denormals(False) is True
    assert fastdrop.get_flush_denormals() is False
    assert fastdrop.cpu_info()["flush_denormals"] is False

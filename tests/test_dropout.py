"""Dropout: the RNG contract bit for bit, statistics, determinism across threads and SIMD
paths, backward and in-place use.  (Bad-input errors are in test_kernels.py.)

Oracles: an independent scalar splitmix64 / xoshiro256+ written here with Python ints
(known-answer vector), and fastdrop.reference (NumPy, vectorised over streams).
"""
import functools
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fastdrop import _core
from fastdrop import kernels as K
from fastdrop import reference as R

BLOCK, LANES = _core.DROPOUT_BLOCK, _core.DROPOUT_LANES
SIZES = [1, 7, 8, 9, 4095, 4096, 4097, 3 * 4096 + 5, 10**6]
RATES = [0.0, 0.1, 0.5, 0.9, 0.999]
SEED = 0x5EED_F00D_1234_5678


# ------------------------------------------------- independent scalar implementation
M64 = (1 << 64) - 1


def splitmix64_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def stream_outputs(seed, stream, count):
    """The first `count` xoshiro256+ outputs of dropout stream `stream` under `seed`."""
    key = splitmix64_mix(seed)
    s = [splitmix64_mix((key + (4 * stream + i + 1) * 0x9E3779B97F4A7C15) & M64)
         for i in range(4)]
    out = []
    for _ in range(count):
        out.append((s[0] + s[3]) & M64)
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = ((s[3] << 45) | (s[3] >> 19)) & M64
    return out


# Frozen by hand from stream_outputs: guards the scalar implementation above itself.
KNOWN_OUTPUTS = {
    0: [0x7BC3DDF7D92596AB, 0xFFD3B942A77AE639, 0xCF18EA72A5C01131, 0x2599ABD097D35C42],
    17: [0x717334BF66966F81, 0x204607539BBCC463, 0x9EE0F184A081A332, 0x948C76FEE3B6079E],
}
# mask bytes 0..7 (block 0, steps 0-3) and 512..519 (block 1) of seed 12345, rate 0.5
KNOWN_MASK = {0: bytes([0xE8, 0x30, 0xAB, 0xB4, 0xDD, 0xBD, 0x42, 0xF6]),
              512: bytes([0xB5, 0x38, 0xCD, 0xB1, 0xB3, 0x79, 0xEF, 0xBA])}


def keep_bits(n, rate, seed):
    """The keep bits fastdrop uses, via kernels.dropout_mask (unpacked to bool)."""
    return np.unpackbits(K.dropout_mask(n, rate, seed), count=n, bitorder="little").view(bool)


@functools.lru_cache(maxsize=None)
def ref_mask(n, seed, rate):
    m = R.dropout_mask(n, seed, rate)
    m.setflags(write=False)
    return m


def data(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n, dtype=np.float32)


def bits_equal(a, b):
    """Bitwise equality of float32 arrays (NaN payloads and signed zeros included)."""
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------- contract
def test_known_answer_scalar_outputs():
    for stream, words in KNOWN_OUTPUTS.items():
        assert stream_outputs(12345, stream, 4) == words


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_known_answer_streams_0_and_17(isa, rate):
    """Every draw of streams 0 (block 0, lane 0) and 17 (block 1, lane 1), seed 12345."""
    thr = min(math.floor(rate * 2**32), 2**32 - 1)
    n = 2 * BLOCK
    keep = keep_bits(n, rate, 12345)
    ref_keep = R.dropout_keep(n, 12345, rate)
    for stream, first in ((0, 0), (17, BLOCK + 1)):
        want = np.array([(u >> 32) >= thr
                         for u in stream_outputs(12345, stream, BLOCK // LANES)])
        got = keep[first::LANES][:BLOCK // LANES]
        np.testing.assert_array_equal(got, want, err_msg=f"stream {stream}, {isa}")
        np.testing.assert_array_equal(ref_keep[first::LANES][:BLOCK // LANES], want)


def test_known_answer_mask_bytes(isa):
    mask = K.dropout_mask(2 * BLOCK, 0.5, 12345)
    for off, want in KNOWN_MASK.items():
        assert bytes(mask[off:off + 8]) == want, (isa, off)


@pytest.mark.parametrize("rate", [0.0, 1e-12, 0.1, 0.5, 0.9, 0.999, np.nextafter(1.0, 0.0)])
def test_threshold(rate):
    want = min(math.floor(rate * 2**32), 2**32 - 1)
    assert _core.dropout_threshold(rate) == want
    assert R.dropout_threshold(rate) == want


# ------------------------------------------------- bits equal to the reference
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rate", RATES)
def test_forward_matches_reference(isa, n, rate):
    x = data(n, n)
    y, mask = K.dropout(x, rate, SEED)
    assert mask.dtype == np.uint8 and mask.shape == ((n + 7) // 8,)
    np.testing.assert_array_equal(mask, ref_mask(n, SEED, rate))
    if n % 8:
        assert mask[-1] >> (n % 8) == 0, "pad bits must be zero"
    np.testing.assert_array_equal(K.dropout_mask(n, rate, SEED), mask)
    y_ref, mask_ref = R.dropout(x, rate, SEED)
    np.testing.assert_array_equal(mask, mask_ref)
    assert bits_equal(y, y_ref)


@pytest.mark.parametrize("n", [9, 4097, 3 * 4096 + 5, 10**6])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.999])
def test_backward_matches_reference(isa, n, rate):
    x, grad = data(n, 1), data(n, 2)
    y, mask = K.dropout(x, rate, SEED)
    g = K.dropout_backward(grad, mask, rate)
    assert bits_equal(g, R.dropout_backward(grad, mask, rate))
    # applying the stored mask to x reproduces the forward pass exactly
    assert bits_equal(K.dropout_backward(x, mask, rate), y)


def test_rate_zero_keeps_everything(isa):
    n = 3 * 4096 + 5
    x = data(n)
    x[:4] = [np.nan, np.inf, -0.0, -np.inf]
    y, mask = K.dropout(x, 0.0, SEED)
    assert bits_equal(y, x * np.float32(1.0))
    assert (mask[:-1] == 0xFF).all() and mask[-1] == (1 << (n % 8)) - 1


def test_special_values(isa):
    """NaN/inf/-0 in x: dropped -> +0.0, kept -> x*scale (what NumPy computes)."""
    n = 4096 + 37
    x = np.resize(np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e38, -3.5], np.float32), n)
    y, mask = K.dropout(x, 0.5, SEED)
    assert bits_equal(y, R.dropout(x, 0.5, SEED)[0])
    keep = np.unpackbits(mask, count=n, bitorder="little").view(bool)
    assert (y[~keep].view(np.uint32) == 0).all()


def test_multidimensional_uses_c_order(isa):
    x = data(3 * 5 * 4099).reshape(3, 5, 4099)
    y, mask = K.dropout(x, 0.3, SEED)
    assert y.shape == x.shape
    y_flat, mask_flat = K.dropout(x.reshape(-1), 0.3, SEED)
    np.testing.assert_array_equal(mask, mask_flat)
    assert bits_equal(y.reshape(-1), y_flat)


def test_in_place(isa):
    n = 5 * 4096 + 3
    x = data(n)
    y_want, mask_want = R.dropout(x, 0.4, SEED)
    buf = x.copy()
    y, mask = K.dropout(buf, 0.4, SEED, out=buf)
    assert y is buf
    np.testing.assert_array_equal(mask, mask_want)
    assert bits_equal(buf, y_want)
    grad = data(n, 7)
    g_want = R.dropout_backward(grad, mask, 0.4)
    g = K.dropout_backward(grad, mask, 0.4, out=grad)
    assert g is grad and bits_equal(grad, g_want)


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9, 0.999])
def test_kept_fraction_and_mean(rate):
    """Kept fraction within 5 binomial standard deviations of 1 - rate; mean(y) within 5
    standard deviations of mean(x), sigma^2 = mean(x^2) * rate / (1 - rate) / n."""
    n = 10**6
    x = np.random.default_rng(3).normal(1.0, 1.0, n).astype(np.float32)
    for seed in (0, 1, SEED):
        y, mask = K.dropout(x, rate, seed)
        p = 1.0 - rate
        kept = np.unpackbits(mask, count=n, bitorder="little").mean()
        assert abs(kept - p) <= 5 * math.sqrt(p * (1 - p) / n), (rate, seed, kept)
        x64 = x.astype(np.float64)
        sigma = math.sqrt((x64 ** 2).mean() * rate / (1 - rate) / n)
        assert abs(y.astype(np.float64).mean() - x64.mean()) <= 5 * sigma, (rate, seed)


def test_different_seeds_give_different_masks():
    n = 8 * 4096
    masks = [K.dropout_mask(n, 0.5, s).tobytes() for s in (0, 1, 2, 3, 12345, 2**63, 2**64 - 1)]
    assert len(set(masks)) == len(masks)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_adjacent_seeds_uncorrelated(rate):
    """Bits of seeds s and s+1 agree with probability p^2 + (1-p)^2 (independence), to
    within 5 standard deviations; the same holds for neighbouring blocks and lanes."""
    n = 10**6
    p = 1.0 - rate
    a_exp = p * p + (1 - p) ** 2
    tol = 5 * math.sqrt(a_exp * (1 - a_exp) / n)
    for s in (0, 41, 2**64 - 2):
        a, b = keep_bits(n, rate, s), keep_bits(n, rate, s + 1)
        assert abs((a == b).mean() - a_exp) <= tol, (rate, s)
    a = keep_bits(n, rate, 7)
    m = (n // BLOCK - 1) * BLOCK
    for shift, what in ((BLOCK, "next block"), (1, "next lane"), (LANES, "next step")):
        tol_s = 5 * math.sqrt(a_exp * (1 - a_exp) / m)
        assert abs((a[:m] == a[shift:shift + m]).mean() - a_exp) <= tol_s, (rate, what)


# ------------------------------------------------ determinism: threads and ISAs
@pytest.mark.skipif(not _core.openmp_enabled(), reason="built without OpenMP")
@pytest.mark.parametrize("n", [4097, 8 * 4096 + 1, 100 * 4096 + 5, 10**6])
def test_thread_count_does_not_change_bits(isa, threads, n):
    x = data(n)
    grad = data(n, 5)
    results = []
    for t in (1, 2, 3):
        threads(t)
        y, mask = K.dropout(x, 0.3, SEED)
        results.append((y, mask, K.dropout_mask(n, 0.3, SEED),
                        K.dropout_backward(grad, mask, 0.3)))
    for y, mask, mask_only, g in results[1:]:
        assert bits_equal(y, results[0][0])
        np.testing.assert_array_equal(mask, results[0][1])
        np.testing.assert_array_equal(mask_only, results[0][1])
        assert bits_equal(g, results[0][3])


@functools.lru_cache(maxsize=1)
def large_case():
    """A tensor whose output (> 32 MB) takes the non-temporal store path."""
    n = (33 << 20) // 4 + 13
    x = data(n, 11)
    y, mask = R.dropout(x, 0.3, SEED)
    return x, y, mask


@pytest.mark.parametrize("offset", [0, 1, 4])
def test_large_tensor_any_alignment(isa, threads, offset):
    """Streaming stores write whole 64-byte lines; out at every alignment still gets the
    exact bits (NumPy buffers are only 16-byte aligned; offset 1 = 4-byte aligned)."""
    x, y_want, mask_want = large_case()
    n = x.size
    buf = np.zeros(n + 16, np.float32)
    out = buf[offset:offset + n]
    for t in (1, 2):
        threads(t)
        buf[:] = 7.0
        y, mask = K.dropout(x, 0.3, SEED, out=out)
        np.testing.assert_array_equal(mask, mask_want)
        assert bits_equal(out, y_want), (t, offset)
        assert (buf[:offset] == 7.0).all() and (buf[offset + n:] == 7.0).all()
        buf[:] = 7.0
        K.dropout_backward(x, mask, 0.3, out=out)
        assert bits_equal(out, y_want), (t, offset)
        assert (buf[:offset] == 7.0).all() and (buf[offset + n:] == 7.0).all()
        out[:] = x  # in place
        K.dropout(out, 0.3, SEED, out=out)
        assert bits_equal(out, y_want), (t, offset)
        out[:] = x
        K.dropout_backward(out, mask, 0.3, out=out)
        assert bits_equal(out, y_want), (t, offset)


def test_every_isa_gives_the_same_bits():
    n = 3 * 4096 + 5
    x = data(n)
    old = _core.isa()
    try:
        out = {}
        for name in _core.isa_supported():
            _core.set_isa(name)
            y, mask = K.dropout(x, 0.25, SEED)
            out[name] = (y, mask, K.dropout_backward(x, mask, 0.25))
    finally:
        _core.set_isa(old)
    first = out[_core.isa_supported()[0]]
    for name, (y, mask, g) in out.items():
        np.testing.assert_array_equal(mask, first[1], err_msg=name)
        assert bits_equal(y, first[0]) and bits_equal(g, first[2]), name


CHILD = """
import hashlib, sys, numpy as np
from fastdrop import _core, kernels as K
assert _core.isa() == sys.argv[1], (_core.isa(), sys.argv[1])
x = np.random.default_rng(0).standard_normal(100003, dtype=np.float32)
y, mask = K.dropout(x, 0.3, 99)
print(hashlib.sha256(y.tobytes() + mask.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("name", _core.isa_supported())
def test_fastdrop_isa_environment_variable(name, tmp_path):
    env = dict(os.environ, FASTDROP_ISA=name)
    # cwd outside the source tree: `-c` puts the cwd on sys.path, and the installed
    # package (with its compiled _core) must be the one imported
    res = subprocess.run([sys.executable, "-c", CHILD, name], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    x = np.random.default_rng(0).standard_normal(100003, dtype=np.float32)
    y, mask = R.dropout(x, 0.3, 99)
    assert res.stdout.strip() == hashlib.sha256(y.tobytes() + mask.tobytes()).hexdigest()


"""bf16 mixed precision: the dtype policy (Keras's names), the bf16 GEMM on every path
this CPU runs (AMX, AVX512-BF16, portable) against the NumPy oracle of
fastdrop.reference.bf16 (bf16 RNE operands, float64 sums, the fp32-accumulation error
bound), and training under 'mixed_bfloat16'."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdrop
from fastdrop import _core, mixed_precision
from fastdrop.layers import Dense, Dropout
from fastdrop.models import Sequential
from fastdrop.reference import bf16 as ref
from fastdrop import reference as R

from helpers import blobs

_FD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))


@pytest.fixture(autouse=True)
def _restore():
    isa, path, pol = _core.isa(), _core.bf16_path(), mixed_precision.global_policy()
    yield
    _core.set_isa(isa)
    if path in _core.bf16_paths_supported():
        _core.set_bf16_path(path)
    mixed_precision.set_global_policy(pol)


def _paths():
    """(fp32 isa, bf16 path) pairs this build and CPU run: every bf16 kernel beside the
    AVX-512 fp32 path, and the portable path under every fp32 path."""
    out = []
    for p in _core.bf16_paths_supported():
        if p != "portable":
            out.append(("avx512", p))
    for isa in _core.isa_supported():
        out.append((isa, "portable"))
    return out


PATHS = _paths()


def _use(isa, path):
    _core.set_isa(isa)
    _core.set_bf16_path(path)
    assert _core.bf16_path() == path


def _model(policy, seed=0, rate=0.2):
    return Sequential([Dense(32, activation="relu", input_dim=20, dtype=policy),
                       Dropout(rate), Dense(16, activation="relu", dtype=policy),
                       Dense(4, activation="softmax", dtype="float32")], seed=seed)


# ------------------------------------------------------------- the conversion
def test_f32_to_bf16_matches_the_reference():
    rng = np.random.default_rng(1)
    x = np.concatenate([
        (rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000)).astype(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 3.4e38, -3.4e38,
                  1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20], np.float32),
        np.array([0x7F800001, 0xFFC00001, 0x3F808000, 0x3F818000], np.uint32).view(np.float32),
    ]).astype(np.float32)
    for isa, path in PATHS:
        _use(isa, path)
        for n in (len(x), 17, 33):
            out = np.empty(n, np.uint16)
            _core.f32_to_bf16(np.ascontiguousarray(x[:n]), out)
            np.testing.assert_array_equal(out, ref.bf16_bits(x[:n]), err_msg=f"{isa}/{path}")


# ------------------------------------------------------------------- the GEMM
SHAPES = [(128, 1024, 784, 0, 0), (128, 784, 1024, 0, 1), (784, 1024, 128, 1, 0),
          (37, 45, 19, 0, 0), (1, 10, 33, 0, 0), (13, 5, 70, 0, 1), (5, 3, 2, 1, 1),
          (64, 33, 1100, 1, 1), (300, 17, 64, 0, 0)]


@pytest.mark.parametrize("isa,path", PATHS)
@pytest.mark.parametrize("m,n,k,ta,tb", SHAPES)
def test_gemm_bf16_against_the_oracle(isa, path, m, n, k, ta, tb):
    _use(isa, path)
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    for alpha, beta in [(1.0, 0.0), (0.5, 1.0)]:
        c = c0.copy()
        _core.gemm_bf16(a, b, c, bool(ta), bool(tb), alpha, beta)
        val, bound = ref.gemm_bf16(a, b, bool(ta), bool(tb), alpha, beta, c0)
        err = np.abs(c - val)
        assert (err <= bound).all(), f"{isa}/{path}: max err/bound {(err / bound).max()}"
    # bf16-bit operands (the weight copies) give the same result as fp32 ones
    a16, b16 = ref.bf16_bits(a), ref.bf16_bits(b)
    c1, c2 = np.zeros((m, n), np.float32), np.zeros((m, n), np.float32)
    _core.gemm_bf16(a, b, c1, bool(ta), bool(tb), 1.0, 0.0)
    _core.gemm_bf16(a16, b16, c2, bool(ta), bool(tb), 1.0, 0.0)
    np.testing.assert_array_equal(c1, c2)


@pytest.mark.parametrize("isa,path", PATHS)
def test_gemm_bf16_epilogue_and_threads(isa, path):
    _use(isa, path)
    rng = np.random.default_rng(5)
    m, n, k = 96, 200, 300
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    mask = rng.integers(0, 256, (m * n + 7) // 8).astype(np.uint8)
    outs = []
    for t in (1, 2):
        fastdrop.set_num_threads(t)
        c = np.full((m, n), np.nan, np.float32)
        _core.gemm_bf16(a, b, c, False, False, 1.0, 0.0, bias, True, mask, 2.0)
        outs.append(c)
    fastdrop.set_num_threads(None)
    np.testing.assert_array_equal(outs[0], outs[1])   # bitwise for any thread count
    val, bound = ref.gemm_bf16(a, b)
    want = R.gemm_epilogue(val.astype(np.float32), bias=bias, relu=True, mask=mask,
                           mask_scale=2.0)
    tol = 2.0 * bound + 4 * ref.U32 * np.abs(want) + 1e-37
    assert (np.abs(outs[0] - want) <= tol).all()


def test_bad_operands_are_clear_errors():
    c = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="a must be"):
        _core.gemm_bf16(np.zeros((2, 2), np.float64), np.zeros((2, 2), np.float32), c,
                        False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="shapes"):
        _core.gemm_bf16(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32), c,
                        False, False, 1.0, 0.0)
    with pytest.raises(ValueError, match="bf16 path"):
        _core.set_bf16_path("fp8")


_RUNNER = r"""
import json, warnings, sys
warnings.simplefilter("error")
import fastdrop
i = fastdrop.cpu_info()
print(json.dumps({k: i[k] for k in ("isa", "bf16", "bf16_supported", "amx")}))
"""


@pytest.mark.parametrize("value", ["avx512bf16", "amx", "avx512", "avx2", "ref"])
def test_fastdrop_isa_forces_each_path(value, tmp_path):
    sup = _core.bf16_paths_supported()
    if value in ("avx512bf16", "amx") and value not in sup:
        pytest.skip(f"{value} not supported here")
    if value in ("avx512", "avx2", "ref") and value not in _core.isa_supported():
        pytest.skip(f"{value} not supported here")
    env = dict(os.environ, FASTDROP_ISA=value,
               PYTHONPATH=os.pathsep.join([_FD_ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                                     if p]))
    r = subprocess.run([sys.executable, "-c", _RUNNER], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    if value in ("avx512bf16", "amx"):
        assert (info["isa"], info["bf16"]) == ("avx512", value)
    else:
        assert (info["isa"], info["bf16"]) == (value, "portable")


# ------------------------------------------------------------------ training
def _train(policy, isa_path=None, epochs=8, seed=0):
    if isa_path:
        _use(*isa_path)
    x, y = blobs(512, seed=3)
    m = _model(policy, seed=seed)
    m.compile("adam", "sparse_categorical_crossentropy")
    h = m.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return m, x, y, h


def test_float32_policy_is_the_fp32_engine_bit_for_bit():
    a, x, _, _ = _train(None, epochs=2)
    b, _, _, _ = _train("float32", epochs=2)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


@pytest.mark.parametrize("isa,path", PATHS)
def test_mixed_bfloat16_trains_and_stays_close_to_fp32(isa, path):
    f32, x, y, _ = _train("float32")
    m, _, _, h = _train("mixed_bfloat16", (isa, path))
    p, q = m.predict(x), f32.predict(x)
    assert p.dtype == np.float32
    loss = h.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    acc, acc32 = (p.argmax(1) == y).mean(), (q.argmax(1) == y).mean()
    assert acc > 0.9 and abs(acc - acc32) <= 0.03
    assert np.abs(p - q).mean() < 0.05
    # reproducible on a path, for any thread count
    fastdrop.set_num_threads(1)
    m1, _, _, _ = _train("mixed_bfloat16", (isa, path))
    fastdrop.set_num_threads(None)
    np.testing.assert_array_equal(m1.predict(x), p)


@pytest.mark.parametrize("isa,path", PATHS[:2])
def test_mc_dropout_predict_under_the_policy(isa, path):
    """MC dropout under mixed_bfloat16: float32 out, masks as fp32's (same seed: the
    spread across passes matches), mean close to the fp32 model's."""
    f32, x, _, _ = _train("float32", epochs=3)
    m = _model("mixed_bfloat16")
    m.set_weights(f32.get_weights())
    _use(isa, path)
    pm, ps = m.predict(x[:64], mc_samples=20, seed=7)
    qm, qs = f32.predict(x[:64], mc_samples=20, seed=7)
    assert pm.dtype == ps.dtype == np.float32 and pm.shape == qm.shape
    assert np.abs(pm - qm).max() < 0.05 and np.abs(ps - qs).max() < 0.05


# ------------------------------------------------- kernel edges (tails, packing layouts)
# M tails of every height (1..14 rows of the 14-row AVX512-BF16 block, 1..32 of AMX's),
# N tails of both kernel widths (16 and 32 columns), odd K and K across the kc blocks
# (> 512), each operand layout the packing takes (A contiguous along k or along m, B
# along n or along k), bf16-bit operands, alpha/beta and the epilogue.
EDGE_SHAPES = [(m, n, k, ta, tb)
               for (m, n, k) in [(1, 1, 1), (2, 17, 3), (13, 16, 5), (15, 31, 33), (27, 32, 63),
                                 (29, 33, 64), (16, 47, 1025), (30, 10, 515), (3, 64, 2),
                                 (129, 49, 130)]
               for ta in (0, 1) for tb in (0, 1)]


@pytest.mark.parametrize("isa,path", [p for p in PATHS if p[1] != "portable"] or
                         [pytest.param(None, None, marks=pytest.mark.skip("no bf16 kernel"))])
@pytest.mark.parametrize("m,n,k,ta,tb", EDGE_SHAPES)
def test_gemm_bf16_kernel_edges(isa, path, m, n, k, ta, tb):
    _use(isa, path)
    rng = np.random.default_rng(m * 131 + n * 17 + k * 3 + ta * 2 + tb)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    mask = rng.integers(0, 256, (m * n + 7) // 8).astype(np.uint8)
    a16, b16 = ref.bf16_bits(a), ref.bf16_bits(b)
    for alpha, beta in [(1.0, 0.0), (-0.75, 0.5)]:
        outs = []
        for t in (1, 2):
            fastdrop.set_num_threads(t)
            for aa, bb in ((a, b), (a16, b), (a, b16)):
                c = c0.copy()
                _core.gemm_bf16(aa, bb, c, bool(ta), bool(tb), alpha, beta)
                outs.append(c)
        fastdrop.set_num_threads(None)
        for c in outs[1:]:   # any thread count, fp32 or bf16-bit operands: the same bits
            np.testing.assert_array_equal(c, outs[0])
        val, bound = ref.gemm_bf16(a, b, bool(ta), bool(tb), alpha, beta, c0)
        assert (np.abs(outs[0] - val) <= bound).all()
    c = np.full((m, n), np.nan, np.float32)
    _core.gemm_bf16(a, b, c, bool(ta), bool(tb), 1.0, 0.0, bias, True, mask, 2.0)
    val, bound = ref.gemm_bf16(a, b, bool(ta), bool(tb))
    want = R.gemm_epilogue(val.astype(np.float32), bias=bias, relu=True, mask=mask,
                           mask_scale=2.0)
    assert (np.abs(c - want) <= 2.0 * bound + 4 * ref.U32 * np.abs(want) + 1e-37).all()


@pytest.mark.parametrize("isa,path", [p for p in PATHS if p[1] != "portable"] or
                         [pytest.param(None, None, marks=pytest.mark.skip("no bf16 kernel"))])
def test_gemm_bf16_tail_tiles_give_the_full_tiles_bits(isa, path):
    """A row or column computed by an edge-tile kernel (fewer rows or columns) has the bits
    the full tile gives it: every kernel variant sums in the same order."""
    _use(isa, path)
    rng = np.random.default_rng(11)
    k = 300
    a = rng.standard_normal((64, k)).astype(np.float32)
    b = rng.standard_normal((k, 96)).astype(np.float32)
    full = np.zeros((64, 96), np.float32)
    _core.gemm_bf16(a, b, full, False, False, 1.0, 0.0)
    for m, n in [(1, 96), (2, 96), (15, 96), (16, 96), (33, 96), (64, 1), (64, 10), (64, 17),
                 (64, 33), (3, 5)]:
        c = np.zeros((m, n), np.float32)
        _core.gemm_bf16(np.ascontiguousarray(a[:m]), np.ascontiguousarray(b[:, :n]), c,
                        False, False, 1.0, 0.0)
        np.testing.assert_array_equal(c, full[:m, :n], err_msg=f"{m}x{n}")

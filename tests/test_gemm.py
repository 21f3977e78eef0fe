"""fastdrop.kernels.gemm / fd_sgemm against fastdrop.reference.gemm (float64 NumPy).

Tolerance (any summation order is allowed, so the test uses the classic worst-case bound
for a float32 dot product of length k, not a fixed rtol):

    |got - ref| <= (k + 2) * 2**-23 * (|alpha| * (|op(a)| @ |op(b)|) + |beta| * |c|) + 1e-30

elementwise.  The epilogue (bias, relu, mask) is checked against reference.gemm_epilogue
applied to the reference product with the same bound (shifted by |bias|).

Every test runs on each kernel path this CPU supports (the `isa` fixture), covers all four
transpose combinations, and the paths the frame chooses from the shape (csrc/gemm/frame.c):
generic (packed micro-kernel), B read in place (m <= 32), dot (trans_a = 0, k >= 16, and
n <= 16 or trans_b with m <= 32) and swapped (n <= 16 otherwise).  Results must be
bitwise identical for 1 and 2 threads.  Nothing here is timed.
"""
import os
import platform
import shutil
import subprocess
import tempfile
import sys

import numpy as np
import pytest

from fastdrop import _core, kernels as K, reference as R
from helpers import needs_source_tree

EPS = 2.0 ** -23
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# m, n, k: ones, primes, non-multiples of every register block (MR 6/14, NR 8/16/32) and
# cache block (MC 120/144/168, KC 256, NC 2048), tall, wide, and the skinny-n paths.
SHAPES = [
    (1, 1, 1), (1, 1, 37), (1, 37, 1), (37, 1, 1), (2, 3, 5), (7, 11, 13),
    (13, 17, 19), (14, 32, 8), (15, 33, 257), (29, 31, 512), (97, 65, 301),
    (169, 47, 3), (173, 130, 97), (3, 1000, 40), (1000, 3, 7), (300, 17, 600),
    (31, 2051, 9), (127, 10, 1024), (128, 10, 33), (1024, 10, 128), (130, 16, 15),
    (64, 5, 700),
]
TRANS = [(False, False), (True, False), (False, True), (True, True)]


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def operands(m, n, k, ta, tb, seed=0):
    a = rand((k, m) if ta else (m, k), seed)
    b = rand((n, k) if tb else (k, n), seed + 1)
    return a, b


def bound(a, b, ta, tb, alpha, beta, c0, k):
    """(k + 2)·eps·(|alpha|·|op(a)|·|op(b)| + |beta|·|c0|): the worst-case float32 error."""
    A = np.abs(a.astype(np.float64))
    B = np.abs(b.astype(np.float64))
    s = abs(alpha) * ((A.T if ta else A) @ (B.T if tb else B))
    if beta != 0.0:
        s = s + abs(beta) * np.abs(c0.astype(np.float64))
    return (k + 2) * EPS * s + 1e-30


def assert_close(got, ref, tol, what):
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bad = ~(err <= tol)
    if bad.any():
        i = np.argwhere(bad)[0]
        pytest.fail(f"{what}: {bad.sum()} of {bad.size} elements off, first at {tuple(i)}: "
                    f"got {got[tuple(i)]!r}, want {ref[tuple(i)]!r} (tol {tol[tuple(i)]:.3g})")


# ------------------------------------------------------------------ products
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_matches_reference(isa, m, n, k, ta, tb):
    a, b = operands(m, n, k, ta, tb, seed=m * 7 + n * 3 + k)
    got = K.gemm(a, b, trans_a=ta, trans_b=tb)
    ref = R.gemm(a, b, trans_a=ta, trans_b=tb)
    assert got.shape == (m, n) and got.dtype == np.float32
    assert_close(got, ref, bound(a, b, ta, tb, 1.0, 0.0, None, k), f"{isa} {m}x{n}x{k}")


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (15, 33, 257), (173, 130, 97), (127, 10, 1024),
                                   (1024, 10, 128), (300, 17, 600), (31, 2051, 9)])
@pytest.mark.parametrize("alpha,beta", [(-1.5, 0.5), (0.25, 1.0), (2.0, -3.0)])
def test_gemm_alpha_beta(isa, m, n, k, ta, tb, alpha, beta):
    a, b = operands(m, n, k, ta, tb, seed=k)
    c0 = rand((m, n), 99)
    out = c0.copy()
    got = K.gemm(a, b, out, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    assert got is out
    ref = R.gemm(a, b, c0, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    assert_close(got, ref, bound(a, b, ta, tb, alpha, beta, c0, k), f"{isa} a={alpha} b={beta}")


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (13, 17, 19), (173, 130, 97), (127, 10, 1024),
                                   (1024, 10, 128), (64, 5, 7)])
def test_beta_zero_never_reads_out(isa, m, n, k, ta, tb):
    a, b = operands(m, n, k, ta, tb, seed=3)
    out = np.full((m, n), np.nan, np.float32)
    K.gemm(a, b, out, trans_a=ta, trans_b=tb, alpha=0.5, beta=0.0)
    assert np.isfinite(out).all()
    ref = R.gemm(a, b, trans_a=ta, trans_b=tb, alpha=0.5)
    assert_close(out, ref, bound(a, b, ta, tb, 0.5, 0.0, None, k), isa)


def test_alpha_zero_scales_out_only(isa):
    a = np.full((20, 30), np.nan, np.float32)  # never read when alpha == 0
    b = np.full((30, 40), np.inf, np.float32)
    out = rand((20, 40), 1)
    want = out * np.float32(-2.0)
    K.gemm(a, b, out, alpha=0.0, beta=-2.0)
    np.testing.assert_array_equal(out, want)
    out[:] = np.nan
    K.gemm(a, b, out, alpha=0.0, beta=0.0)
    np.testing.assert_array_equal(out, np.zeros((20, 40), np.float32))


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_k_zero(isa, beta):
    """k == 0: C = beta*C, then the epilogue (through _core: the public API rejects empty a)."""
    m, n = 9, 21
    a = np.empty((m, 0), np.float32)
    b = np.empty((0, n), np.float32)
    c0 = rand((m, n), 4)
    c = np.full((m, n), np.nan, np.float32) if beta == 0.0 else c0.copy()
    bias = rand(n, 5)
    _core.gemm(a, b, c, False, False, 1.0, beta, bias, True, None, 1.0)
    z = np.zeros((m, n), np.float32) if beta == 0.0 else c0 * np.float32(beta)
    np.testing.assert_array_equal(c, R.gemm_epilogue(z, bias=bias, relu=True))


# ------------------------------------------------------------------ epilogue
def mask_bits(m, n, seed, rate=0.4):
    keep = np.random.default_rng(seed).random(m * n) >= rate
    return np.packbits(keep, bitorder="little")


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (15, 33, 257), (173, 130, 97), (300, 17, 600),
                                   (127, 10, 1024), (1024, 10, 128), (64, 5, 7),
                                   (31, 2051, 9)])
@pytest.mark.parametrize("bias,relu,mask", [(True, False, False), (False, True, False),
                                            (False, False, True), (True, True, True)])
def test_epilogue(isa, m, n, k, ta, tb, bias, relu, mask):
    a, b = operands(m, n, k, ta, tb, seed=11)
    c0 = rand((m, n), 12)
    bv = rand(n, 13) if bias else None
    mv = mask_bits(m, n, 14) if mask else None
    for beta in (0.0, 0.5):
        c = c0.copy() if beta else np.full((m, n), np.nan, np.float32)
        _core.gemm(a, b, c, ta, tb, 1.25, beta, bv, relu, mv, 2.5)
        z = R.gemm(a, b, c0, trans_a=ta, trans_b=tb, alpha=1.25, beta=beta)
        want = R.gemm_epilogue(z, bias=bv, relu=relu, mask=mv, mask_scale=2.5)
        tol = 2.5 * (bound(a, b, ta, tb, 1.25, beta, c0, k) + (np.abs(bv) * EPS if bias else 0))
        assert_close(c, want, tol, f"{isa} beta={beta}")
        if mask:  # dropped elements are exactly zero
            keep = np.unpackbits(mv, count=m * n, bitorder="little").reshape(m, n)
            assert (c[keep == 0] == 0).all()


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,n,k", [(1, 40, 30), (15, 33, 257), (300, 17, 600),
                                   (127, 10, 1024), (50, 300, 40)])
@pytest.mark.parametrize("bit0,group", [(0, 0), (5, 0), (13, 9), (64, 32)])
def test_epilogue_extended(isa, threads, m, n, k, ta, tb, bit0, group):
    """mask_bit0 (global bit offset), mask_row_group (rows r share bit row r // g:
    SpatialDropout2D on NHWC) and per-column scale/shift (BatchNorm folded at inference)
    against the NumPy reference; dropped elements exactly 0; 1 vs 2 threads bitwise."""
    from fastdrop.reference.gemm_epilogue import gemm_epilogue_ext
    a, b = operands(m, n, k, ta, tb, seed=51)
    bv, sc, sh = rand(n, 52), rand(n, 53), rand(n, 54)
    rows = -(-m // group) if group else m
    mv = mask_bits(1, bit0 + rows * n + 11, 55)
    z = R.gemm(a, b, None, trans_a=ta, trans_b=tb, alpha=1.0, beta=0.0)
    want = gemm_epilogue_ext(z, bias=bv, relu=True, mask=mv, mask_scale=2.0, mask_bit0=bit0,
                             mask_row_group=group, scale=sc, shift=sh)
    outs = []
    for t in (1, 2):
        threads(t)
        c = np.full((m, n), np.nan, np.float32)
        _core.gemm(a, b, c, ta, tb, 1.0, 0.0, bv, True, mv, 2.0, bit0, group, sc, sh)
        outs.append(c)
    assert outs[0].tobytes() == outs[1].tobytes()
    tol = 2.0 * (bound(a, b, ta, tb, 1.0, 0.0, None, k) + np.abs(bv) * EPS) * (np.abs(sc) + EPS) \
        + 4 * EPS * (np.abs(sh) + np.abs(want))
    assert_close(outs[0], want, tol, f"{isa} bit0={bit0} group={group}")
    assert (outs[0][want == 0] == 0).all()
    # scale/shift alone (no mask, no relu); shift without scale
    c = np.empty((m, n), np.float32)
    _core.gemm(a, b, c, ta, tb, 1.0, 0.0, None, False, None, 1.0, 0, 0, None, sh)
    assert_close(c, gemm_epilogue_ext(z, shift=sh), bound(a, b, ta, tb, 1.0, 0.0, None, k)
                 + 2 * EPS * np.abs(sh), "shift only")


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(14, 32, 50), (29, 47, 900), (173, 130, 97), (5, 2100, 257),
                                   (300, 17, 600), (1, 300, 40)])
def test_register_epilogue_bitwise_equals_epilogue_of_stored_product(isa, m, n, k, ta, tb):
    """The epilogue applied in the micro-kernel's registers performs the same float32
    operations as a separate pass over the stored product (NumPy float32 here)."""
    from fastdrop.reference.gemm_epilogue import gemm_epilogue_ext
    a, b = operands(m, n, k, ta, tb, seed=61)
    c0 = rand((m, n), 62)
    bv, sc, sh = rand(n, 63), rand(n, 64), rand(n, 65)
    mv = mask_bits(1, 3 + m * n + 40, 66)
    for beta in (0.0, 0.5):
        plain = c0.copy()
        _core.gemm(a, b, plain, ta, tb, 1.5, beta)
        fused = c0.copy()
        _core.gemm(a, b, fused, ta, tb, 1.5, beta, bv, True, mv, 2.0, 3, 0, sc, sh)
        want = gemm_epilogue_ext(plain, bias=bv, relu=True, mask=mv, mask_scale=2.0,
                                 mask_bit0=3, scale=sc, shift=sh)
        assert fused.tobytes() == want.tobytes(), f"{isa} beta={beta}"


def test_epilogue_extended_argument_checks():
    a, b = operands(4, 6, 5, False, False)
    c = np.empty((4, 6), np.float32)
    with pytest.raises(ValueError, match="mask must be"):  # 2 row groups * 6 + 50 bits
        _core.gemm(a, b, c, False, False, 1.0, 0.0, None, False, np.zeros(7, np.uint8), 1.0,
                   50, 3)
    _core.gemm(a, b, c, False, False, 1.0, 0.0, None, False, np.zeros(8, np.uint8), 1.0, 50, 3)
    with pytest.raises(ValueError, match="scale must have shape"):
        _core.gemm(a, b, c, False, False, 1.0, 0.0, None, False, None, 1.0, 0, 0,
                   np.ones(5, np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        _core.gemm(a, b, c, False, False, 1.0, 0.0, None, False, np.zeros(8, np.uint8), 1.0, -1)


# ------------------------------------------------------------ determinism
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("m,n,k", [(301, 299, 530), (128, 1024, 784), (1024, 512, 128),
                                   (130, 10, 1024), (1024, 10, 128), (2000, 3, 300),
                                   (5, 2100, 257)])
def test_bitwise_identical_for_1_and_2_threads(isa, threads, m, n, k, ta, tb):
    a, b = operands(m, n, k, ta, tb, seed=21)
    bias, mask = rand(n, 22), mask_bits(m, n, 23)
    outs = []
    for t in (1, 2):
        threads(t)
        c = rand((m, n), 24)
        _core.gemm(a, b, c, ta, tb, 0.75, 0.5, bias, True, mask, 2.0)
        outs.append(c)
    assert outs[0].tobytes() == outs[1].tobytes()


def test_isa_paths_agree_within_tolerance():
    """Every path computes the same product (within the bound); each is tested above."""
    m, n, k = 77, 45, 333
    a, b = operands(m, n, k, False, True, seed=31)
    old = _core.isa()
    try:
        for name in _core.isa_supported():
            _core.set_isa(name)
            got = K.gemm(a, b, trans_b=True)
            assert_close(got, R.gemm(a, b, trans_b=True),
                         bound(a, b, False, True, 1.0, 0.0, None, k), name)
    finally:
        _core.set_isa(old)


def test_release_buffers_then_reuse(isa):
    a, b = operands(200, 300, 400, False, False, seed=41)
    first = K.gemm(a, b)
    _core.release_buffers()
    np.testing.assert_array_equal(K.gemm(a, b), first)


# ------------------------------------------------- strided (lda/ldb/ldc) in C
@pytest.mark.skipif(shutil.which("gcc") is None or sys.platform == "win32"
                    or not os.path.isfile(os.path.join(ROOT, "tools", "gemm_harness.c"))
                    or not os.path.isdir(os.path.join(ROOT, "csrc")),
                    reason="needs gcc and the source tree (csrc/, tools/gemm_harness.c)")
@needs_source_tree("csrc", "tools/gemm_harness.c")
def test_c_harness_check(tmp_path):
    """tools/gemm_harness.c `check`: padded lda/ldb/ldc (the Python API only passes
    contiguous arrays), untouched C padding, every ISA, 1 vs 2 threads bitwise."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    flags = ["-O2", "-std=c11", "-fopenmp", "-Icsrc"]
    isa_flags = {"avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2",
                            "-mfma"], "avx2": ["-mavx2", "-mfma"]}
    srcs = []
    for d, _, files in os.walk(os.path.join(ROOT, "csrc")):
        srcs += [os.path.join(d, f) for f in files if f.endswith(".c")]
    if x86:
        flags += ["-DFD_HAVE_AVX2", "-DFD_HAVE_AVX512"]
    else:
        srcs = [s for s in srcs if "avx" not in os.path.basename(s)]
    objs = []
    for src in sorted(srcs):
        name = os.path.basename(src)
        extra = next((v for key, v in isa_flags.items() if key in name), [])
        obj = str(tmp_path / (name[:-2] + ".o"))
        subprocess.run(["gcc", *flags, *extra, "-c", src, "-o", obj], cwd=ROOT, check=True)
        objs.append(obj)
    exe = str(tmp_path / "gemm_harness")
    subprocess.run(["gcc", *flags, "tools/gemm_harness.c", *objs, "-lm", "-o", exe],
                   cwd=ROOT, check=True)
    r = subprocess.run([exe, "check"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failures" in r.stdout


# ------------------------------------------------------- one-row path (batch 1)
@pytest.mark.parametrize("k,n", [(784, 256), (1000, 1000), (17, 5003), (3, 40), (50, 7),
                                 (300, 129), (784, 10)])
def test_single_row_bitwise_equals_row_of_batch(isa, k, n):
    """m == 1 runs the row kernel; every row must equal the same row computed in a batch
    (so predict(x[i:i+1]) == predict(x)[i]), with and without beta and the epilogue."""
    from fastdrop import _core
    rng = np.random.default_rng(k * n)
    a = rng.standard_normal((6, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    full = np.empty((6, n), np.float32)
    _core.gemm(a, b, full, False, False, 1.0, 0.0)
    for i in range(3):
        row = np.empty((1, n), np.float32)
        _core.gemm(a[i:i + 1].copy(), b, row, False, False, 1.0, 0.0)
        np.testing.assert_array_equal(row[0], full[i])
    c = rng.standard_normal((6, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    cf = c.copy()
    _core.gemm(a, b, cf, False, False, 2.0, 0.5, bias, True, None, 1.0)
    c1 = c[:1].copy()
    _core.gemm(a[:1].copy(), b, c1, False, False, 2.0, 0.5, bias, True, None, 1.0)
    np.testing.assert_array_equal(c1[0], cf[0])
    np.testing.assert_allclose(
        c1[0], np.maximum(2.0 * (a[0].astype(np.float64) @ b) + 0.5 * c[0] + bias, 0),
        rtol=1e-4, atol=1e-3)


# ------------------------------------------------- per-microarchitecture table
def test_cpu_info_names_the_gemm_table():
    import fastdrop
    info = fastdrop.cpu_info()
    name, blocks = _core.gemm_table()
    assert info["gemm_table"] == name and info["gemm_blocks"] == blocks
    assert name in ("zen5", "zen4", "zen2-zen3", "sapphire-rapids", "icelake-server",
                    "skylake-server", "haswell", "generic-ref", "generic-avx2",
                    "generic-avx512", "override")
    assert blocks["mc"] % blocks["mr"] == 0 and blocks["nc"] % blocks["nr"] == 0
    assert blocks["kc"] % 8 == 0
    d = _core.cpu_describe()
    if platform.machine().lower() in ("x86_64", "amd64") and d["vendor"] == "AuthenticAMD" \
            and d["family"] == 26 and info["isa"] == "avx512":
        assert name == "zen5"


def test_gemm_blocks_override_gives_correct_results():
    """FASTDROP_GEMM_BLOCKS (tuning) changes MC/KC/NC; products stay within the bound."""
    code = ("import numpy as np; from fastdrop import _core, kernels as K, reference as R\n"
            "print(_core.gemm_table())\n"
            "rng = np.random.default_rng(0)\n"
            "a = rng.standard_normal((301, 517)).astype(np.float32)\n"
            "b = rng.standard_normal((517, 263)).astype(np.float32)\n"
            "err = np.abs(K.gemm(a, b) - a.astype(np.float64) @ b).max()\n"
            "print('err', err)\n")
    env = dict(os.environ, FASTDROP_GEMM_BLOCKS="56,128,256", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(_core.__file__)), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    assert "'override'" in r.stdout
    assert float(r.stdout.split("err ")[-1]) < 1e-3

"""SGEMM (``C = op(A)·op(B)``) beside ``numpy.matmul(out=)``, and the Dense epilogue
kernels (bias add, bias-gradient column sum) beside their NumPy versions."""
import numpy as np

from .. import peers
from ..harness import Case, ratio

#: the three GEMMs of a 784-1024-…-10 training step at batch 128, and a one-sample predict
MLP_SHAPES = [("fwd x·W", 128, 1024, 784, False, False),
              ("dW xᵀ·dz", 784, 1024, 128, True, False),
              ("dX dz·Wᵀ", 128, 784, 1024, False, True),
              ("out h·W", 128, 10, 1024, False, False),
              ("predict x·W", 1, 256, 784, False, False)]


def operands(m, n, k, trans_a, trans_b, rng):
    """(a, b, out): a stored (k, m) when trans_a, b stored (n, k) when trans_b."""
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    return a, b, np.empty((m, n), np.float32)


def gemm_sides(a, b, out, trans_a=False, trans_b=False, out_numpy=None, api="core"):
    """{"fastdrop": fn, "numpy": fn}.  ``api="core"``: ``_core.gemm`` (what the engine
    calls), ``"public"``: ``fastdrop.kernels.gemm`` (with its argument checks).
    ``out_numpy``: NumPy's own output array (default: the same ``out``)."""
    from ... import _core
    from ... import kernels as K
    if api == "core":
        fd = lambda: _core.gemm(a, b, out, trans_a, trans_b, 1.0, 0.0)  # noqa: E731
    else:
        fd = lambda: K.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b)  # noqa: E731
    return {"fastdrop": fd,
            "numpy": peers.numpy_gemm(a, b, out if out_numpy is None else out_numpy,
                                      trans_a, trans_b)}


def bias_operands(m, n, rng):
    """(x, b, out, col) for bias add and column sums on an m×n activation."""
    x = rng.standard_normal((m, n), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    return x, b, np.empty_like(x), np.empty(n, np.float32)


def bias_add_sides(x, b, out):
    from ... import kernels as K
    from ... import reference as R
    return {"fastdrop": lambda: K.bias_add(x, b, out=out), "reference": lambda: R.bias_add(x, b)}


def colsum_sides(x, col):
    """The bias gradient: ``_core.colsum`` and ``d.sum(0)`` (as the reference computes it)."""
    from ... import _core
    return {"fastdrop": lambda: _core.colsum(x, col),
            "numpy": lambda: np.sum(x, axis=0, out=col)}


def bench(ctx):
    """GFLOP/s of every shape in ``cfg["gemm_square"]`` (+ ``MLP_SHAPES`` when
    ``cfg["gemm_mlp"]``) at all threads and at 1 thread, with a check that both sides
    agree."""
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    shapes = [("square", s, s, s, False, False) for s in cfg["gemm_square"]]
    if cfg["gemm_mlp"]:
        shapes += MLP_SHAPES
    rows = []
    for name, m, n, k, ta, tb in shapes:
        a, bm, c1 = operands(m, n, k, ta, tb, ctx.rng)
        c2 = np.empty((m, n), np.float32)
        s = gemm_sides(a, bm, c1, ta, tb, out_numpy=c2)
        fd, npy = s["fastdrop"], s["numpy"]
        cases = {"fastdrop": Case(fd, ctx.fd_threads(ctx.n)),
                 "numpy": Case(npy, ctx.blas_threads(ctx.n))}
        if ctx.n > 1:
            cases["fastdrop_1t"] = Case(fd, ctx.fd_threads(1))
            cases["numpy_1t"] = Case(npy, ctx.blas_threads(1))
        r = ctx.measure(cases, scale=1.5)
        flop = 2.0 * m * n * k
        g = {key: flop / v["best"] / 1e9 for key, v in r.items()}
        row = dict(op=name, m=m, n=n, k=k, trans_a=ta, trans_b=tb, threads=ctx.n,
                   fastdrop_gflops=g["fastdrop"], numpy_gflops=g["numpy"],
                   ratio=g["fastdrop"] / g["numpy"],
                   fastdrop_1t_gflops=g.get("fastdrop_1t"), numpy_1t_gflops=g.get("numpy_1t"),
                   ratio_1t=ratio(g.get("fastdrop_1t"), g.get("numpy_1t")),
                   fastdrop_median_s=r["fastdrop"]["median"],
                   numpy_median_s=r["numpy"]["median"])
        # a fast wrong kernel is no result: compare with NumPy's product
        err = float(np.max(np.abs(c1 - c2)) / max(float(np.max(np.abs(c2))), 1e-30))
        row["max_rel_diff"] = err
        row["agrees"] = bool(err < 1e-4)
        rows.append(row)
        ctx.log(f"gemm {name} {m}x{n}x{k}: {row['fastdrop_gflops']:.1f} vs "
                f"{row['numpy_gflops']:.1f} GFLOP/s")
    ctx.threads(ctx.n)
    return rows

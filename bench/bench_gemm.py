"""SGEMM: fastdrop.kernels.gemm beside numpy.matmul (OpenBLAS) on the same float32
inputs, one pytest-benchmark group per (shape, thread count).

    pytest bench/bench_gemm.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops [-k "sq or mlp-128"]

Shapes (m × n × k, C = op(A)·op(B)):
  sq      square 256, 1024, 2048
  mlp     Dense layers, batch 32/128/256 × in 784/1024 × out 512/1024, the three GEMMs of
          a training step: fwd  x(b×in)·W(in×out);  dW  xᵀ·dz (trans_a, k = batch);
          dX  dz·Wᵀ (trans_b)
  n10     the 10-way output layer, batch 128 × in 512/1024, the same three forms
Every shape runs at 1 thread and at all threads, set explicitly on both sides (fastdrop
and NumPy's BLAS through threadpoolctl: install it, or NumPy's side is not controlled).
The n10 groups also time fastdrop._core.gemm, the kernel without the public API's
argument checks (~4 us a call, a third of a 128×10×512 product).
Targets, as the ratio of the best rounds in one group: >= 0.95 (square 1024/2048),
>= 1.0 (mlp), >= 1.5 (n10 fwd).  extra_info["GFLOP/s"] has the best round's rate.
"""
import numpy as np
import pytest

from fastdrop.benchmarks.cases import gemm as G
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()  # cores this process may run on

SHAPES = [("sq", n, n, n, False, False) for n in (256, 1024, 2048)]
for _b in (32, 128, 256):
    for _i in (784, 1024):
        for _o in (512, 1024):
            SHAPES += [(f"mlp-{_b}-fwd", _b, _o, _i, False, False),
                       (f"mlp-{_b}-dW", _i, _o, _b, True, False),
                       (f"mlp-{_b}-dX", _b, _i, _o, False, True)]
for _i in (1024, 512):
    SHAPES += [("n10-fwd", 128, 10, _i, False, False),
               ("n10-dW", _i, 10, 128, True, False),
               ("n10-dX", 128, _i, 10, False, True)]
THREADS = sorted({1, ALL_THREADS})
CASES = [(s, t) for s in SHAPES for t in THREADS]
IDS = [f"{name}-{m}x{n}x{k}-{t}t" for (name, m, n, k, _, _), t in CASES]


@pytest.fixture(scope="module")
def operands():
    """(a, b, out) per shape, made once: stored a is (k, m) when trans_a, b (n, k) when
    trans_b."""
    cache = {}

    def get(m, n, k, ta, tb):
        key = (m, n, k, ta, tb)
        if key not in cache:
            cache[key] = G.operands(m, n, k, ta, tb, np.random.default_rng(m * 31 + n * 7 + k))
        return cache[key]

    return get


def _group(benchmark, name, m, n, k, t):
    benchmark.group = f"gemm {name} {m}x{n}x{k} {t}t"
    benchmark.extra_info.update(m=m, n=n, k=k, threads=t)


@pytest.mark.parametrize("shape,t", CASES, ids=IDS)
def test_gemm_fastdrop(benchmark, operands, threads, record, shape, t):
    name, m, n, k, ta, tb = shape
    a, b, out = operands(m, n, k, ta, tb)
    threads(t)
    _group(benchmark, name, m, n, k, t)
    benchmark(G.gemm_sides(a, b, out, ta, tb, api="public")["fastdrop"])
    record(benchmark, flops=2.0 * m * n * k)


N10 = [(s, t) for s, t in CASES if s[0].startswith("n10")]


@pytest.mark.parametrize("shape,t", N10, ids=[i for i, c in zip(IDS, CASES) if c in N10])
def test_gemm_fastdrop_core(benchmark, operands, threads, record, shape, t):
    name, m, n, k, ta, tb = shape
    a, b, out = operands(m, n, k, ta, tb)
    threads(t)
    _group(benchmark, name, m, n, k, t)
    benchmark(G.gemm_sides(a, b, out, ta, tb, api="core")["fastdrop"])
    record(benchmark, flops=2.0 * m * n * k)


@pytest.mark.parametrize("shape,t", CASES, ids=IDS)
def test_gemm_numpy(benchmark, operands, threads, record, shape, t):
    name, m, n, k, ta, tb = shape
    a, b, out = operands(m, n, k, ta, tb)
    threads(t)
    _group(benchmark, name, m, n, k, t)
    benchmark(G.gemm_sides(a, b, out, ta, tb)["numpy"])
    record(benchmark, flops=2.0 * m * n * k)

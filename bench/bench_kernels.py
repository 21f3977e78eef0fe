"""fastdrop's elementwise, loss, optimizer and bias kernels beside their NumPy references
(``fastdrop.reference``) on the same inputs, one ``benchmark.group`` per kernel and size.

    pytest bench/bench_kernels.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

* relu / relu_backward: a cache-sized (1M float32 = 4 MB) and a DRAM-sized (32M = 128 MB)
  tensor, fastdrop at all threads and at 1 thread, the reference, and ``np.copyto`` (the
  memcpy bandwidth baseline, 1 thread) in the same group.  GB/s counts bytes read +
  written (relu 8 B/element, relu_backward 12, memcpy 8); target >= 0.8x memcpy.
* softmax_cross_entropy: batch 128 and 1024 x 10, 100, 1000 classes (integer labels),
  loss + gradient; target >= 5x the reference.
* Adam update on the parameter blocks of 784-256-256-10 and 784-1024-1024-10 (fastdrop's
  ``optimizers.Adam.apply``, the one fused kernel the engine runs per step).
* bias_add and the bias-gradient column sum (``_core.colsum``, used by every Dense
  backward) on batch x units activations.

NumPy's elementwise references are single-threaded; fastdrop runs the thread count named
in the benchmark id (set explicitly).  Throughput goes to ``extra_info`` (best round).
"""
import numpy as np
import pytest

from fastdrop.benchmarks.cases import activations as A
from fastdrop.benchmarks.cases import gemm as G
from fastdrop.benchmarks.cases import losses as LS
from fastdrop.benchmarks.cases import optim as O
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()      # cores this process may run on
SIZES = {"4MB": 1 << 20, "128MB": 32 << 20}
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def elem(request):
    n = SIZES[request.param]
    x, g, y, out = A.arrays(n, np.random.default_rng(0))
    return request.param, n, {k: A.relu_sides(k, x, g, y, out, api="public")
                              for k in A.RELU_KERNELS}


# ------------------------------------------------------------------------------ relu
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_relu_fastdrop(benchmark, elem, threads, record, nthreads):
    size, n, sides = elem
    threads(nthreads)
    benchmark.group = f"relu-{size}"
    benchmark(sides["relu"]["fastdrop"])
    record(benchmark, nbytes=A.relu_nbytes("relu", n), elements=n, threads=nthreads)


def test_relu_reference(benchmark, elem, record):
    size, n, sides = elem
    benchmark.group = f"relu-{size}"
    benchmark(sides["relu"]["reference"])
    record(benchmark, nbytes=A.relu_nbytes("relu", n), elements=n, threads=1)


def test_relu_memcpy(benchmark, elem, record):
    size, n, sides = elem
    benchmark.group = f"relu-{size}"
    benchmark(sides["relu"]["memcpy"])
    record(benchmark, nbytes=8 * n, elements=n, threads=1)


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_relu_backward_fastdrop(benchmark, elem, threads, record, nthreads):
    size, n, sides = elem
    threads(nthreads)
    benchmark.group = f"relu_backward-{size}"
    benchmark(sides["relu_backward"]["fastdrop"])
    record(benchmark, nbytes=A.relu_nbytes("relu_backward", n), elements=n, threads=nthreads)


def test_relu_backward_reference(benchmark, elem, record):
    size, n, sides = elem
    benchmark.group = f"relu_backward-{size}"
    benchmark(sides["relu_backward"]["reference"])
    record(benchmark, nbytes=A.relu_nbytes("relu_backward", n), elements=n, threads=1)


def test_relu_backward_memcpy(benchmark, elem, record):
    size, n, sides = elem
    benchmark.group = f"relu_backward-{size}"
    benchmark(sides["relu_backward"]["memcpy"])
    record(benchmark, nbytes=8 * n, elements=n, threads=1)


# ------------------------------------------------------------- softmax cross-entropy
XENT = [(b, c) for b in (128, 1024) for c in (10, 100, 1000)]
XENT_IDS = [f"{b}x{c}" for b, c in XENT]


@pytest.fixture(scope="module", params=XENT, ids=XENT_IDS)
def xent(request):
    b, c = request.param
    logits, labels, grad = LS.xent_arrays(b, c, np.random.default_rng(1))
    return (f"softmax_cross_entropy-{b}x{c}", logits,
            LS.xent_sides(logits, labels, grad, api="public"))


def test_xent_fastdrop(benchmark, xent, threads, record):
    group, logits, sides = xent
    threads(ALL_THREADS)
    benchmark.group = group
    benchmark(sides["fastdrop"])
    record(benchmark, nbytes=8 * logits.size, rows=logits.shape[0],
           classes=logits.shape[1], threads=ALL_THREADS)


def test_xent_reference(benchmark, xent, record):
    group, logits, sides = xent
    benchmark.group = group
    benchmark(sides["reference"])
    record(benchmark, nbytes=8 * logits.size, rows=logits.shape[0],
           classes=logits.shape[1], threads=1)


# ----------------------------------------------------------------------------- Adam
PARAMS = {"784-256-256-10": 269_322, "784-1024-1024-10": 1_863_690}


@pytest.fixture(scope="module", params=list(PARAMS), ids=list(PARAMS))
def adam(request):
    n = PARAMS[request.param]
    arrays = O.adam_arrays(n, np.random.default_rng(2))
    return f"adam-{request.param}", n, O.adam_sides(*arrays, api="public")


def test_adam_fastdrop(benchmark, adam, threads, record):
    group, n, sides = adam
    threads(ALL_THREADS)
    benchmark.group = group
    benchmark(sides["fastdrop"])
    record(benchmark, nbytes=28 * n, params=n, threads=ALL_THREADS)


def test_adam_reference(benchmark, adam, record):
    group, n, sides = adam
    benchmark.group = group
    benchmark(sides["reference"])
    record(benchmark, nbytes=28 * n, params=n, threads=1)


@pytest.mark.parametrize("flush", [True, False], ids=["flush", "ieee"])
def test_adam_subnormal_moments(benchmark, threads, record, flush):
    """Adam with a third of the moments subnormal (weights fed by always-zero pixels after
    a few epochs): with flushing (the default) it runs at the normal speed; IEEE
    subnormals (set_flush_denormals(False)) show the penalty of this CPU."""
    import fastdrop
    n = 1 << 20
    step = O.adam_subnormal_step(n)
    threads(1)
    old = fastdrop.set_flush_denormals(flush)
    try:
        benchmark.group = "adam-subnormal-1M"
        benchmark(step)
    finally:
        fastdrop.set_flush_denormals(old)
    record(benchmark, nbytes=28 * n, params=n, threads=1)


# ------------------------------------------------------------------- bias and colsum
BIAS = [(128, 1024), (1024, 1024)]
BIAS_IDS = [f"{m}x{n}" for m, n in BIAS]


@pytest.fixture(scope="module", params=BIAS, ids=BIAS_IDS)
def act(request):
    m, n = request.param
    x, b, out, col = G.bias_operands(m, n, np.random.default_rng(3))
    return f"{m}x{n}", x, G.bias_add_sides(x, b, out), G.colsum_sides(x, col)


def test_bias_add_fastdrop(benchmark, act, threads, record):
    shape, x, sides, _ = act
    threads(ALL_THREADS)
    benchmark.group = f"bias_add-{shape}"
    benchmark(sides["fastdrop"])
    record(benchmark, nbytes=8 * x.size, threads=ALL_THREADS)


def test_bias_add_reference(benchmark, act, record):
    shape, x, sides, _ = act
    benchmark.group = f"bias_add-{shape}"
    benchmark(sides["reference"])
    record(benchmark, nbytes=8 * x.size, threads=1)


def test_colsum_fastdrop(benchmark, act, threads, record):
    shape, x, _, sides = act
    threads(ALL_THREADS)
    benchmark.group = f"colsum-{shape}"
    benchmark(sides["fastdrop"])
    record(benchmark, nbytes=4 * x.size, threads=ALL_THREADS)


def test_colsum_numpy(benchmark, act, record):
    """The reference's bias gradient: ``d.sum(0)`` (fastdrop.reference.mlp_loss_and_grads)."""
    shape, x, _, sides = act
    benchmark.group = f"colsum-{shape}"
    benchmark(sides["numpy"])
    record(benchmark, nbytes=4 * x.size, threads=1)

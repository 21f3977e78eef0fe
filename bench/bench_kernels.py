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

from fastdrop import _core
from fastdrop import kernels as K
from fastdrop import reference as R
from fastdrop._bench import _cpu_count
from fastdrop.optimizers import Adam

ALL_THREADS = _cpu_count()      # cores this process may run on
SIZES = {"4MB": 1 << 20, "128MB": 32 << 20}
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def elem(request):
    n = SIZES[request.param]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    y = np.maximum(x, np.float32(0))          # relu output (half zeros)
    out = np.zeros_like(x)
    return request.param, n, x, g, y, out


# ------------------------------------------------------------------------------ relu
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_relu_fastdrop(benchmark, elem, threads, record, nthreads):
    size, n, x, _, _, out = elem
    threads(nthreads)
    benchmark.group = f"relu-{size}"
    benchmark(K.relu, x, out=out)
    record(benchmark, nbytes=8 * n, elements=n, threads=nthreads)


def test_relu_reference(benchmark, elem, record):
    size, n, x, _, _, _ = elem
    benchmark.group = f"relu-{size}"
    benchmark(R.relu, x)
    record(benchmark, nbytes=8 * n, elements=n, threads=1)


def test_relu_memcpy(benchmark, elem, record):
    size, n, x, _, _, out = elem
    benchmark.group = f"relu-{size}"
    benchmark(np.copyto, out, x)
    record(benchmark, nbytes=8 * n, elements=n, threads=1)


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_relu_backward_fastdrop(benchmark, elem, threads, record, nthreads):
    size, n, _, g, y, out = elem
    threads(nthreads)
    benchmark.group = f"relu_backward-{size}"
    benchmark(K.relu_backward, g, y, out=out)
    record(benchmark, nbytes=12 * n, elements=n, threads=nthreads)


def test_relu_backward_reference(benchmark, elem, record):
    size, n, _, g, y, _ = elem
    benchmark.group = f"relu_backward-{size}"
    benchmark(R.relu_backward, g, y)
    record(benchmark, nbytes=12 * n, elements=n, threads=1)


def test_relu_backward_memcpy(benchmark, elem, record):
    size, n, x, _, _, out = elem
    benchmark.group = f"relu_backward-{size}"
    benchmark(np.copyto, out, x)
    record(benchmark, nbytes=8 * n, elements=n, threads=1)


# ------------------------------------------------------------- softmax cross-entropy
XENT = [(b, c) for b in (128, 1024) for c in (10, 100, 1000)]
XENT_IDS = [f"{b}x{c}" for b, c in XENT]


@pytest.fixture(scope="module", params=XENT, ids=XENT_IDS)
def xent(request):
    b, c = request.param
    rng = np.random.default_rng(1)
    logits = (3 * rng.standard_normal((b, c))).astype(np.float32)
    labels = rng.integers(0, c, b).astype(np.int64)
    return f"softmax_cross_entropy-{b}x{c}", logits, labels


def test_xent_fastdrop(benchmark, xent, threads, record):
    group, logits, labels = xent
    threads(ALL_THREADS)
    benchmark.group = group
    benchmark(K.softmax_cross_entropy, logits, labels)
    record(benchmark, nbytes=8 * logits.size, rows=logits.shape[0],
           classes=logits.shape[1], threads=ALL_THREADS)


def test_xent_reference(benchmark, xent, record):
    group, logits, labels = xent
    benchmark.group = group
    benchmark(R.softmax_cross_entropy, logits, labels)
    record(benchmark, nbytes=8 * logits.size, rows=logits.shape[0],
           classes=logits.shape[1], threads=1)


# ----------------------------------------------------------------------------- Adam
PARAMS = {"784-256-256-10": 269_322, "784-1024-1024-10": 1_863_690}


@pytest.fixture(scope="module", params=list(PARAMS), ids=list(PARAMS))
def adam(request):
    n = PARAMS[request.param]
    rng = np.random.default_rng(2)
    w = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
    return f"adam-{request.param}", n, w, g


def test_adam_fastdrop(benchmark, adam, threads, record):
    group, n, w, g = adam
    threads(ALL_THREADS)
    opt = Adam(learning_rate=1e-3)
    opt.build(n)
    p = w.copy()
    benchmark.group = group
    benchmark(opt.apply, p, g)
    record(benchmark, nbytes=28 * n, params=n, threads=ALL_THREADS)


def test_adam_reference(benchmark, adam, record):
    group, n, w, g = adam
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    benchmark.group = group
    benchmark(R.adam_update, w, g, m, v, 1e-3, 10)
    record(benchmark, nbytes=28 * n, params=n, threads=1)


@pytest.mark.parametrize("flush", [True, False], ids=["flush", "ieee"])
def test_adam_subnormal_moments(benchmark, threads, record, flush):
    """Adam with a third of the moments subnormal (weights fed by always-zero pixels after
    a few epochs): with flushing (the default) it runs at the normal speed; IEEE
    subnormals (set_flush_denormals(False)) show the penalty of this CPU."""
    import fastdrop
    n = 1 << 20
    g = np.zeros(n, np.float32)
    g[::3] = 1e-3
    w = np.ones(n, np.float32)
    m = np.full(n, 1e-39, np.float32)
    v = np.full(n, 1e-39, np.float32)
    threads(1)
    old = fastdrop.set_flush_denormals(flush)

    def step():
        m[1::3] = 1e-39
        v[1::3] = 1e-39
        _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 10)

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
    rng = np.random.default_rng(3)
    x = rng.standard_normal((m, n), dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    return f"{m}x{n}", x, b, np.empty_like(x), np.empty(n, np.float32)


def test_bias_add_fastdrop(benchmark, act, threads, record):
    shape, x, b, out, _ = act
    threads(ALL_THREADS)
    benchmark.group = f"bias_add-{shape}"
    benchmark(K.bias_add, x, b, out=out)
    record(benchmark, nbytes=8 * x.size, threads=ALL_THREADS)


def test_bias_add_reference(benchmark, act, record):
    shape, x, b, _, _ = act
    benchmark.group = f"bias_add-{shape}"
    benchmark(R.bias_add, x, b)
    record(benchmark, nbytes=8 * x.size, threads=1)


def test_colsum_fastdrop(benchmark, act, threads, record):
    shape, x, _, _, col = act
    threads(ALL_THREADS)
    benchmark.group = f"colsum-{shape}"
    benchmark(_core.colsum, x, col)
    record(benchmark, nbytes=4 * x.size, threads=ALL_THREADS)


def test_colsum_numpy(benchmark, act, record):
    """The reference's bias gradient: ``d.sum(0)`` (fastdrop.reference.mlp_loss_and_grads)."""
    shape, x, _, _, col = act
    benchmark.group = f"colsum-{shape}"
    benchmark(np.sum, x, axis=0, out=col)
    record(benchmark, nbytes=4 * x.size, threads=1)

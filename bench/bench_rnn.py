"""Recurrent layers: one training step's forward + backward of LSTM(128) and GRU(128) on
(128, 28, 28) sequences (Fashion-MNIST rows as steps), fastdrop's stage beside PyTorch's
``nn.LSTM`` / ``nn.GRU`` (when importable; same threads) and the float64 NumPy reference
(small batch: it is slow), plus LSTM with dropout = recurrent_dropout = 0.25.

    pytest bench/bench_rnn.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

Targets (performance.md): LSTM training >= 1.3x nn.LSTM, GRU >= 1.5x nn.GRU, the dropout
LSTM <= 1.15x the cost of the plain one.  ``extra_info`` has samples/s and GFLOP/s (the
step's multiply-adds x 2: forward input projection and recurrent GEMMs, backward dh, dU
and dW GEMMs; no dx for a first layer) beside the square-1024 SGEMM figure.
"""
import numpy as np
import pytest

from fastdrop import _core
from fastdrop._bench import _cpu_count
from fastdrop.engine import TRAIN, Arena, Context
from fastdrop.layers.recurrent import GRU, LSTM
from fastdrop.reference import rnn as R

try:
    import torch
except ImportError:      # pragma: no cover
    torch = None

ALL_THREADS = _cpu_count()
M, T, F, U = 128, 28, 28, 128
CASES = {"lstm": (LSTM, {}, 4), "gru": (GRU, {}, 3),
         "lstm-dropout": (LSTM, {"dropout": 0.25, "recurrent_dropout": 0.25}, 4)}


def step_flops(G, m=M):
    fwd = 2 * m * T * F * G * U + 2 * m * (T - 1) * U * G * U
    bwd = 2 * m * (T - 1) * U * G * U * 2 + 2 * m * T * F * G * U
    return fwd + bwd


def _stage(cls, kw, rng):
    L = cls(U, **kw)
    L.build((T, F))
    for v in L.variables:
        v.value = v.initializer(v.shape, rng).astype(np.float32)
        setattr(L, v.name, v.value)
        v.grad = np.zeros(v.shape, np.float32)
        setattr(L, "d" + v.name, v.grad)
    L.noise_index = 1
    st = L.make_stage()
    st.bind((T, F))
    Arena().allocate([st], M)
    return L, st


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, T, F)).astype(np.float32)
    dy = rng.standard_normal((M, U)).astype(np.float32)
    return x, dy


@pytest.fixture(scope="module")
def sgemm_gflops():
    import time
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    c = np.zeros_like(a)
    old = _core.get_num_threads()
    _core.set_num_threads(ALL_THREADS)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        _core.gemm(a, a, c, False, False, 1.0, 0.0)
        best = min(best, time.perf_counter() - t)
    _core.set_num_threads(old)
    return 2 * 1024 ** 3 / best / 1e9


@pytest.mark.parametrize("case", list(CASES))
def test_rnn_train_fastdrop(benchmark, data, threads, case, sgemm_gflops):
    x, dy = data
    threads(ALL_THREADS)
    cls, kw, G = CASES[case]
    L, st = _stage(cls, kw, np.random.default_rng(2))
    step = [0]

    def run():
        step[0] += 1
        ctx = Context(TRAIN, M, step=step[0])
        st.forward(ctx, x)
        st.backward(ctx, dy, False)

    benchmark.group = f"rnn-{case.split('-')[0]}-train"
    benchmark(run)
    best = benchmark.stats.stats.min
    benchmark.extra_info.update(samples_per_s=M / best, threads=ALL_THREADS,
                                gflops=step_flops(G) / best / 1e9,
                                sgemm_1024_gflops=sgemm_gflops)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_rnn_train_torch(benchmark, data, case):
    x, _ = data
    torch.set_num_threads(ALL_THREADS)
    torch.manual_seed(0)
    mod = (torch.nn.LSTM if case == "lstm" else torch.nn.GRU)(F, U, batch_first=True)
    xt = torch.from_numpy(x)

    def run():
        mod.zero_grad(set_to_none=False)
        out, _ = mod(xt)
        out[:, -1].sum().backward()

    benchmark.group = f"rnn-{case}-train"
    benchmark(run)
    benchmark.extra_info.update(samples_per_s=M / benchmark.stats.stats.min,
                                threads=ALL_THREADS)


@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_rnn_train_reference(benchmark, data, case):
    """The float64 NumPy reference on 8 of the 128 sequences (samples/s is comparable)."""
    x, dy = data
    cls, kw, G = CASES[case]
    L, _ = _stage(cls, kw, np.random.default_rng(2))
    xs, dys = x[:8], dy[:8]

    def run():
        b = L.bias
        _, cache = R.rnn_forward(L.cell, xs, L.kernel, L.recurrent_kernel, b)
        R.rnn_backward(cache, dys)

    benchmark.group = f"rnn-{case}-train"
    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(samples_per_s=8 / benchmark.stats.stats.min)

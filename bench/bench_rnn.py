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

from fastdrop.benchmarks import peers
from fastdrop.benchmarks.cases import gemm
from fastdrop.benchmarks.cases import rnn
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

torch = peers.torch()
ALL_THREADS = _cpu_count()
M = 128
CASES = rnn.CELLS


def _best(benchmark):
    """The best round in seconds, or None under --benchmark-disable (no statistics)."""
    st = getattr(benchmark, "stats", None)
    return st.stats.min if st is not None and getattr(st, "stats", None) is not None else None


@pytest.fixture(scope="module")
def data():
    return rnn.step_data(M, np.random.default_rng(0))


def _sides(case, data, torch=None, ref_batch=8):
    x, dy = data
    layer, stage = rnn.rnn_layer(case, M, np.random.default_rng(2))
    return rnn.rnn_sides(case, layer, stage, x, dy, ref_batch, torch)


@pytest.fixture(scope="module")
def sgemm_gflops():
    import time

    from fastdrop import _core
    a, b, c = gemm.operands(1024, 1024, 1024, False, False, np.random.default_rng(1))
    fn = gemm.gemm_sides(a, b, c)["fastdrop"]
    old = _core.get_num_threads()
    _core.set_num_threads(ALL_THREADS)
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    _core.set_num_threads(old)
    return 2 * 1024 ** 3 / best / 1e9


@pytest.mark.parametrize("case", list(CASES))
def test_rnn_train_fastdrop(benchmark, data, threads, case, sgemm_gflops):
    threads(ALL_THREADS)
    benchmark.group = f"rnn-{case.split('-')[0]}-train"
    benchmark(_sides(case, data)["fastdrop"])
    best = _best(benchmark)
    if best:
        benchmark.extra_info.update(samples_per_s=M / best, threads=ALL_THREADS,
                                    gflops=rnn.step_flops(CASES[case][2], M) / best / 1e9,
                                    sgemm_1024_gflops=sgemm_gflops)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_rnn_train_torch(benchmark, data, case):
    torch.set_num_threads(ALL_THREADS)
    benchmark.group = f"rnn-{case}-train"
    benchmark(_sides(case, data, torch)["torch"])
    if _best(benchmark):
        benchmark.extra_info.update(samples_per_s=M / _best(benchmark), threads=ALL_THREADS)


@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_rnn_train_reference(benchmark, data, case):
    """The float64 NumPy reference on 8 of the 128 sequences (samples/s is comparable)."""
    benchmark.group = f"rnn-{case}-train"
    benchmark.pedantic(_sides(case, data)["reference"], rounds=3, iterations=1)
    if _best(benchmark):
        benchmark.extra_info.update(samples_per_s=8 / _best(benchmark))

"""fastdrop's optimizer updates (RMSprop, Adagrad, Adadelta, Nadam, and Adam with each
clipping mode) beside the NumPy reference of Keras's formulas
(``fastdrop.reference.optimizers``) and PyTorch's optimizers when importable, on the
parameter block of 784-1024-1024-10 (1,863,690 parameters, its four variables as
segments), one ``benchmark.group`` per optimizer.

    pytest bench/bench_optim.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

fastdrop runs at all threads; the NumPy reference is single-threaded float64 (an oracle,
not a tuned baseline); PyTorch runs its single-tensor ``foreach`` path at all threads.
GB/s in ``extra_info`` counts the bytes the fused kernel reads and writes.
"""
import numpy as np
import pytest

from fastdrop.benchmarks.cases import optim as OC
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()
SEGS, N = OC.segments()
CASES = OC.OPTIMIZERS


@pytest.fixture(scope="module")
def block():
    return OC.block(N, np.random.default_rng(0))


def _nbytes(name):
    return CASES[name][3] * N


@pytest.mark.parametrize("name", list(CASES))
def test_optim_fastdrop(benchmark, block, threads, record, name):
    threads(ALL_THREADS)
    fn = OC.optimizer_sides(name, *block, SEGS)["fastdrop"]
    benchmark.group = f"optim-{name}"
    benchmark(fn)
    record(benchmark, nbytes=_nbytes(name), params=N, threads=ALL_THREADS)


@pytest.mark.parametrize("name", list(CASES))
def test_optim_reference(benchmark, block, record, name):
    fn = OC.optimizer_sides(name, *block, SEGS)["reference"]
    benchmark.group = f"optim-{name}"
    benchmark.pedantic(fn, rounds=5, iterations=1)
    record(benchmark, nbytes=_nbytes(name), params=N, threads=1)


@pytest.mark.parametrize("name", [k for k, v in CASES.items() if v[2] is not None])
def test_optim_torch(benchmark, block, threads, record, name):
    torch = pytest.importorskip("torch")
    threads(ALL_THREADS)
    fn = OC.optimizer_sides(name, *block, SEGS, torch=torch)["torch"]
    benchmark.group = f"optim-{name}"
    benchmark(fn)
    record(benchmark, nbytes=_nbytes(name), params=N, threads=ALL_THREADS)

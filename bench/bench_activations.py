"""Activation kernels (``_core.act_forward`` / ``act_backward``) beside their NumPy
references (``fastdrop.reference.activations`` in float64 and a float32 NumPy one-liner),
``np.copyto`` (memcpy) and PyTorch when importable, on 1M float32 elements (4 MB: cache
resident), one ``benchmark.group`` per activation and direction.

    pytest bench/bench_activations.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

GB/s counts bytes read + written: forward 8 B/element, backward 12 (grad, z or y, out).
"""
import numpy as np
import pytest

from fastdrop import _core
from fastdrop.benchmarks import peers
from fastdrop.benchmarks.cases import activations as A
from fastdrop.benchmarks.cases import losses as LS
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]
N = 1 << 20
NAMES = A.names()
torch = peers.torch()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 2).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    return x, g, np.empty_like(x), np.empty_like(x)


def _sides(data, name, direction):
    x, g, out, d = data
    if direction == "backward":
        _core.act_forward(name, x, out)
    return A.act_sides(name, direction, x, g, out, d, torch)


def _run(benchmark, record, fn, name, direction, threads, skip=None):
    if fn is None:
        pytest.skip(skip or f"no such {direction} version of {name}")
    benchmark.group = f"act-{name}-{direction}-1M"
    with np.errstate(all="ignore"):
        benchmark(fn)
    record(benchmark, nbytes=A.act_nbytes(direction, N), elements=N, threads=threads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_forward_fastdrop(benchmark, data, threads, record, name, nthreads):
    threads(nthreads)
    _run(benchmark, record, _sides(data, name, "forward")["fastdrop"], name, "forward",
         nthreads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_backward_fastdrop(benchmark, data, threads, record, name, nthreads):
    threads(nthreads)
    _run(benchmark, record, _sides(data, name, "backward")["fastdrop"], name, "backward",
         nthreads)


@pytest.mark.parametrize("name", NAMES)
def test_forward_numpy32(benchmark, data, record, name):
    _run(benchmark, record, _sides(data, name, "forward")["numpy32"], name, "forward", 1,
         "NumPy has no float32 erf")


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gelu"])
def test_forward_reference64(benchmark, data, record, name):
    _run(benchmark, record, _sides(data, name, "forward")["reference64"], name, "forward", 1)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gelu"])
def test_backward_reference64(benchmark, data, record, name):
    _run(benchmark, record, _sides(data, name, "backward")["reference64"], name, "backward",
         1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_memcpy(benchmark, data, record, name, direction):
    benchmark.group = f"act-{name}-{direction}-1M"
    benchmark(_sides(data, name, "forward")["memcpy"])
    record(benchmark, nbytes=8 * N, elements=N, threads=1)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=[f"torch-{t}T" for t in FD_THREADS])
def test_forward_torch(benchmark, data, threads, record, name, nthreads):
    threads(nthreads)
    with torch.no_grad():
        _run(benchmark, record, _sides(data, name, "forward")["torch"], name, "forward",
             nthreads)


# ------------------------------------------------- binary cross-entropy (fused)
BCE_SHAPES = {"1024x1": (1024, 1), "128x100": (128, 100), "4096x10": (4096, 10)}


@pytest.fixture(scope="module", params=list(BCE_SHAPES), ids=list(BCE_SHAPES))
def bce_data(request):
    z, t, g = LS.bce_arrays(BCE_SHAPES[request.param], np.random.default_rng(1))
    return request.param, z, LS.bce_sides(z, t, g)


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_bce_logits_fastdrop(benchmark, bce_data, threads, record, nthreads):
    size, z, sides = bce_data
    threads(nthreads)
    benchmark.group = f"bce-logits-{size}"
    benchmark(sides["fastdrop"])
    record(benchmark, samples=z.shape[0], threads=nthreads)


def test_bce_logits_reference(benchmark, bce_data, record):
    size, z, sides = bce_data
    benchmark.group = f"bce-logits-{size}"
    benchmark(sides["reference"])
    record(benchmark, samples=z.shape[0], threads=1)

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
from fastdrop._bench import _cpu_count
from fastdrop.reference import activations as RA

ALL_THREADS = _cpu_count()
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]
N = 1 << 20
NAMES = RA.NAMES

try:
    import torch
    import torch.nn.functional as F
    TORCH = {
        "linear": lambda t: t.clone(), "relu": torch.relu, "relu6": F.relu6,
        "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "elu": F.elu, "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "softplus": F.softplus, "silu": F.silu,
        "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "hard_sigmoid": F.hardsigmoid, "softsign": F.softsign, "mish": F.mish,
    }
except ImportError:
    torch = None
    TORCH = {}


def _np32(name):
    """A plain float32 NumPy version (what a user would write)."""
    f = np.float32
    return {
        "linear": lambda x: x.copy(),
        "relu": lambda x: np.maximum(x, f(0)),
        "relu6": lambda x: np.minimum(np.maximum(x, f(0)), f(6)),
        "leaky_relu": lambda x: np.where(x > 0, x, f(0.2) * x),
        "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
        "tanh": np.tanh,
        "sigmoid": lambda x: f(1) / (f(1) + np.exp(-x)),
        "softplus": lambda x: np.logaddexp(f(0), x),
        "silu": lambda x: x / (f(1) + np.exp(-x)),
        "gelu": None,
        "gelu_tanh": lambda x: f(0.5) * x * (f(1) + np.tanh(f(0.7978846) * (x + f(0.044715) * x * x * x))),
        "hard_sigmoid": lambda x: np.clip(x + f(3), f(0), f(6)) / f(6),
        "softsign": lambda x: x / (f(1) + np.abs(x)),
        "mish": lambda x: x * np.tanh(np.logaddexp(f(0), x)),
    }[name]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 2).astype(np.float32)
    g = rng.standard_normal(N).astype(np.float32)
    return x, g, np.empty_like(x), np.empty_like(x)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_forward_fastdrop(benchmark, data, threads, record, name, nthreads):
    x, _, out, _ = data
    threads(nthreads)
    benchmark.group = f"act-{name}-forward-1M"
    benchmark(_core.act_forward, name, x, out)
    record(benchmark, nbytes=8 * N, elements=N, threads=nthreads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_backward_fastdrop(benchmark, data, threads, record, name, nthreads):
    x, g, out, d = data
    threads(nthreads)
    _core.act_forward(name, x, out)
    benchmark.group = f"act-{name}-backward-1M"
    benchmark(_core.act_backward, name, g, x, out, d)
    record(benchmark, nbytes=12 * N, elements=N, threads=nthreads)


@pytest.mark.parametrize("name", NAMES)
def test_forward_numpy32(benchmark, data, record, name):
    x = data[0]
    f = _np32(name)
    if f is None:
        pytest.skip("NumPy has no float32 erf")
    benchmark.group = f"act-{name}-forward-1M"
    with np.errstate(all="ignore"):
        benchmark(f, x)
    record(benchmark, nbytes=8 * N, elements=N, threads=1)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gelu"])
def test_forward_reference64(benchmark, data, record, name):
    x = data[0]
    benchmark.group = f"act-{name}-forward-1M"
    benchmark(RA.forward, name, x)
    record(benchmark, nbytes=8 * N, elements=N, threads=1)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gelu"])
def test_backward_reference64(benchmark, data, record, name):
    x, g, out, _ = data
    _core.act_forward(name, x, out)
    benchmark.group = f"act-{name}-backward-1M"
    benchmark(RA.backward, name, g, x, out)
    record(benchmark, nbytes=12 * N, elements=N, threads=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_memcpy(benchmark, data, record, name, direction):
    x, _, out, _ = data
    benchmark.group = f"act-{name}-{direction}-1M"
    benchmark(np.copyto, out, x)
    record(benchmark, nbytes=8 * N, elements=N, threads=1)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nthreads", FD_THREADS, ids=[f"torch-{t}T" for t in FD_THREADS])
def test_forward_torch(benchmark, data, threads, record, name, nthreads):
    threads(nthreads)
    t = torch.from_numpy(data[0])
    f = TORCH[name]
    benchmark.group = f"act-{name}-forward-1M"
    with torch.no_grad():
        benchmark(f, t)
    record(benchmark, nbytes=8 * N, elements=N, threads=nthreads)


# ------------------------------------------------- binary cross-entropy (fused)
BCE_SHAPES = {"1024x1": (1024, 1), "128x100": (128, 100), "4096x10": (4096, 10)}


@pytest.fixture(scope="module", params=list(BCE_SHAPES), ids=list(BCE_SHAPES))
def bce_data(request):
    shape = BCE_SHAPES[request.param]
    rng = np.random.default_rng(1)
    z = (rng.standard_normal(shape) * 3).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    return request.param, z, t, np.empty_like(z)


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_bce_logits_fastdrop(benchmark, bce_data, threads, record, nthreads):
    from fastdrop.losses import BinaryCrossentropy
    size, z, t, g = bce_data
    threads(nthreads)
    loss = BinaryCrossentropy(from_logits=True)
    benchmark.group = f"bce-logits-{size}"
    benchmark(loss.forward_backward, z, t, g)
    record(benchmark, samples=z.shape[0], threads=nthreads)


def test_bce_logits_reference(benchmark, bce_data, record):
    from fastdrop.reference import losses as RL
    size, z, t, _ = bce_data
    benchmark.group = f"bce-logits-{size}"
    benchmark(RL.binary_crossentropy, z, t)
    record(benchmark, samples=z.shape[0], threads=1)

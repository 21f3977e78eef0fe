"""Dropout forward and backward beside the NumPy reference and a plain np.copyto (the
memcpy bandwidth baseline), on the same 1M (4 MB, cache) and 32M (128 MB, DRAM) float32
inputs, one pytest-benchmark group per (direction, size).

    pytest bench/bench_dropout.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

Every fastdrop path this CPU supports is timed at the default thread count (all cores),
and the best path once more with 1 thread.  np.copyto is single-threaded.  Each entry
records extra_info["bytes"] (bytes read + written: x, y and the 1/8-byte mask) and
extra_info["elements"], so GB/s = bytes / time and the ratio to memcpy is read off the
same group; the target is >= 0.8x memcpy bandwidth and >= 20x the reference.
"""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core
from fastdrop.benchmarks.cases import dropout as D

SIZES = {"1M": 1 << 20, "32M": 32 << 20}
RATE = 0.5
SEED = D.SEED
ISAS = _core.isa_supported()
BEST = ISAS[-1]


@pytest.fixture(scope="module", params=list(SIZES), ids=list(SIZES))
def arrays(request):
    n = SIZES[request.param]
    x, y, mask = D.arrays(n, np.random.default_rng(0), RATE, SEED)
    return request.param, x, y, mask


def _sides(direction, x, y, mask):
    """fastdrop through the public ``fastdrop.kernels`` API (``bench`` times ``_core``)."""
    return D.dropout_sides(direction, x, y, mask, RATE, SEED, api="public")


def _info(benchmark, group, n, nbytes):
    benchmark.group = group
    benchmark.extra_info["elements"] = n
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info["threads"] = fastdrop.get_num_threads()


@pytest.fixture
def on_path():
    """Select an ISA path and thread count for one benchmark; restored afterwards."""
    old_isa, old_threads = _core.isa(), fastdrop.get_num_threads()

    def set_(isa, threads=0):
        _core.set_isa(isa)
        fastdrop.set_num_threads(threads)

    yield set_
    _core.set_isa(old_isa)
    fastdrop.set_num_threads(old_threads)


VARIANTS = [(isa, 0) for isa in ISAS] + [(BEST, 1)]
VARIANT_IDS = [f"{isa}-{'1thread' if t == 1 else 'allthreads'}" for isa, t in VARIANTS]


@pytest.mark.parametrize("isa,threads", VARIANTS, ids=VARIANT_IDS)
def test_forward_fastdrop(benchmark, arrays, on_path, isa, threads):
    size, x, y, mask = arrays
    on_path(isa, threads)
    _info(benchmark, f"dropout-forward-{size}", x.size, 8 * x.size + x.size // 8)
    benchmark(_sides("forward", x, y, mask)["fastdrop"])


def test_forward_reference(benchmark, arrays):
    size, x, y, mask = arrays
    _info(benchmark, f"dropout-forward-{size}", x.size, 8 * x.size + x.size // 8)
    benchmark.pedantic(_sides("forward", x, y, mask)["reference"],
                       rounds=3 if x.size > 1 << 22 else 10, warmup_rounds=1)


@pytest.mark.parametrize("isa,threads", VARIANTS, ids=VARIANT_IDS)
def test_backward_fastdrop(benchmark, arrays, on_path, isa, threads):
    size, x, y, mask = arrays
    on_path(isa, threads)
    _info(benchmark, f"dropout-backward-{size}", x.size, 8 * x.size + x.size // 8)
    benchmark(_sides("backward", x, y, mask)["fastdrop"])


def test_backward_reference(benchmark, arrays):
    size, x, y, mask = arrays
    _info(benchmark, f"dropout-backward-{size}", x.size, 8 * x.size + x.size // 8)
    benchmark.pedantic(_sides("backward", x, y, mask)["reference"],
                       rounds=3 if x.size > 1 << 22 else 10, warmup_rounds=1)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_memcpy_copyto(benchmark, arrays, direction):
    size, x, y, mask = arrays
    _info(benchmark, f"dropout-{direction}-{size}", x.size, 8 * x.size)
    benchmark.extra_info["threads"] = 1
    benchmark(_sides(direction, x, y, mask)["memcpy"])

"""Convolution layers: forward + backward of fastdrop's ConvStage beside the NumPy
reference (``fastdrop.reference.conv``, small batch) and PyTorch (when importable, NCHW
and channels-last), one ``benchmark.group`` per layer.

    pytest bench/bench_conv.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

Cases (batch 128, 3×3 kernels, ReLU, Adam-free: one conv layer's forward + backward):
* ``seed003-conv``: 28×28×1 -> 32 (the seed 003 CNN's conv, the first layer of an MNIST
  net: no dx needed; the small-K direct kernels);
* ``convnet-conv2``: 13×13×32 -> 64 (Keras mnist_convnet's second conv: implicit GEMM;
  dx computed).
GFLOP/s in ``extra_info`` count 2·M·K·oc per GEMM-equivalent pass (3 passes with dx,
2 without); ``gemm-1024`` gives fd_sgemm's square figure in the same run for the ratio.
"""
import numpy as np
import pytest

from fastdrop.benchmarks.cases import cnn
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]
BATCH = 128
REF_BATCH = 8
CASES = cnn.CONV_LAYERS


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def conv_case(request):
    case = CASES[request.param]
    layer, stage, x, dy = cnn.conv_layer(case, BATCH, np.random.default_rng(0))
    return request.param, case, layer, stage, x, dy


def _sides(conv_case, torch=None):
    _, case, layer, stage, x, dy = conv_case
    return cnn.conv_sides(case, layer, stage, x, dy, REF_BATCH, torch)


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_conv_fastdrop(benchmark, conv_case, threads, record, nthreads):
    name, case = conv_case[:2]
    threads(nthreads)
    benchmark.group = f"conv-{name}"
    benchmark(_sides(conv_case)["fastdrop"])
    record(benchmark, flops=cnn.conv_flops(case, BATCH), samples=BATCH, threads=nthreads)


def test_conv_reference(benchmark, conv_case, record):
    name, case = conv_case[:2]
    benchmark.group = f"conv-{name}"
    benchmark.pedantic(_sides(conv_case)["reference"], rounds=5, iterations=1)
    record(benchmark, flops=cnn.conv_flops(case, REF_BATCH), samples=REF_BATCH, threads=1,
           batch=REF_BATCH)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_torch(benchmark, conv_case, threads, record, layout):
    torch = pytest.importorskip("torch")
    name, case = conv_case[:2]
    threads(ALL_THREADS)
    benchmark.group = f"conv-{name}"
    benchmark(_sides(conv_case, torch)["torch" if layout == "nchw" else "torch_cl"])
    record(benchmark, flops=cnn.conv_flops(case, BATCH), samples=BATCH, threads=ALL_THREADS)


def test_gemm_1024_fastdrop(benchmark, threads, record):
    """fd_sgemm square 1024 in the same run: the conv GFLOP/s ratio's anchor."""
    from fastdrop.benchmarks.cases import gemm
    threads(ALL_THREADS)
    benchmark.group = "conv-gemm-1024"
    a, b, c = gemm.operands(1024, 1024, 1024, False, False, np.random.default_rng(0))
    benchmark(gemm.gemm_sides(a, b, c)["fastdrop"])
    record(benchmark, flops=2 * 1024 ** 3, threads=ALL_THREADS)

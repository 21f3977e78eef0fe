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

from fastdrop import _core
from fastdrop._bench import _cpu_count
from fastdrop.engine import TRAIN, Arena, Context
from fastdrop.layers.conv import Conv2D
from fastdrop.reference import conv as R

ALL_THREADS = _cpu_count()
FD_THREADS = sorted({ALL_THREADS, 1}, reverse=True)
FD_IDS = [f"fastdrop-{t}T" for t in FD_THREADS]
BATCH = 128
REF_BATCH = 8

CASES = {
    "seed003-conv": dict(in_shape=(28, 28, 1), filters=32, need_dx=False),
    "convnet-conv2": dict(in_shape=(13, 13, 32), filters=64, need_dx=True),
}


def _flops(case, n):
    h, w, c = case["in_shape"]
    oh, ow = h - 2, w - 2
    passes = 3 if case["need_dx"] else 2
    return passes * 2 * n * oh * ow * 9 * c * case["filters"]


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def conv_case(request):
    case = CASES[request.param]
    rng = np.random.default_rng(0)
    layer = Conv2D(case["filters"], 3, activation="relu")
    layer.build(case["in_shape"])
    for v in layer.variables:
        v.value = v.initializer(v.shape, rng).astype(np.float32)
        setattr(layer, v.name, v.value)
        v.grad = np.zeros(v.shape, np.float32)
        setattr(layer, "d" + v.name, v.grad)
    stage = layer.make_stage()
    stage.bind(case["in_shape"])
    Arena().allocate([stage], BATCH)
    x = rng.standard_normal((BATCH,) + case["in_shape"]).astype(np.float32)
    dy = rng.standard_normal((BATCH,) + stage.out_shape).astype(np.float32)
    return request.param, case, layer, stage, x, dy


@pytest.mark.parametrize("nthreads", FD_THREADS, ids=FD_IDS)
def test_conv_fastdrop(benchmark, conv_case, threads, record, nthreads):
    name, case, layer, stage, x, dy = conv_case
    threads(nthreads)
    benchmark.group = f"conv-{name}"
    ctx = Context(TRAIN, BATCH)

    def step():
        stage.forward(ctx, x)
        stage.backward(ctx, dy, case["need_dx"])

    benchmark(step)
    record(benchmark, flops=_flops(case, BATCH), samples=BATCH, threads=nthreads)


def test_conv_reference(benchmark, conv_case, record):
    name, case, layer, stage, x, dy = conv_case
    benchmark.group = f"conv-{name}"
    xs, dys = x[:REF_BATCH], dy[:REF_BATCH]
    w, b = layer.kernel, layer.bias

    def step():
        z = R.conv2d(xs, w, b, dtype=np.float32)
        R.conv2d_backward(xs, w, np.where(z > 0, dys, 0), dtype=np.float32)

    benchmark.pedantic(step, rounds=5, iterations=1)
    record(benchmark, flops=_flops(case, REF_BATCH), samples=REF_BATCH, threads=1,
           batch=REF_BATCH)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_torch(benchmark, conv_case, threads, record, layout):
    torch = pytest.importorskip("torch")
    name, case, layer, stage, x, dy = conv_case
    threads(ALL_THREADS)
    benchmark.group = f"conv-{name}"
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    xt.requires_grad_(case["need_dx"])
    wt = torch.tensor(layer.kernel).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
    wt.requires_grad_(True)
    bt = torch.zeros(case["filters"], requires_grad=True)
    gy = torch.tensor(dy).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

    def step():
        y = torch.relu(torch.nn.functional.conv2d(xt, wt, bt))
        y.backward(gy)

    benchmark(step)
    record(benchmark, flops=_flops(case, BATCH), samples=BATCH, threads=ALL_THREADS)


def test_gemm_1024_fastdrop(benchmark, threads, record):
    """fd_sgemm square 1024 in the same run: the conv GFLOP/s ratio's anchor."""
    threads(ALL_THREADS)
    benchmark.group = "conv-gemm-1024"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    c = np.empty_like(a)
    benchmark(_core.gemm, a, a, c, False, False, 1.0, 0.0)
    record(benchmark, flops=2 * 1024 ** 3, threads=ALL_THREADS)

"""bf16 mixed precision: the bf16 GEMM against the fp32 SGEMM on MLP shapes, and MLP
784-1024-1024-10 training under 'mixed_bfloat16' against float32 (and against PyTorch's
torch.autocast("cpu", torch.bfloat16) when torch is installed).  The cases come from
fastdrop.benchmarks.cases.bf16 (the same callables ``python -m fastdrop bench`` times).

    pytest bench/bench_bf16.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,ops

GEMM groups: one per shape (fwd, fwd2, dW, dX at batch 128 and 256, and 1024³); fp32
(fastdrop._core.gemm) and every bf16 path this CPU runs (amx, avx512bf16, portable;
fastdrop._core.gemm_bf16), all threads.  extra_info has the best and median GFLOP/s.

Training groups: one per training side (fastdrop float32, mixed_bfloat16 per bf16 path,
PyTorch fp32, PyTorch bf16 autocast), each a fit of STEPS batches of 128 a round, Dropout
0.5 after each hidden layer, Adam; extra_info has samples/s.

The A/B case (test_mlp_train_ab) is one benchmark that alternates every side over rounds
inside the same process, so drift of a shared machine hits every side alike; it reports
the median and the range of samples/s per side and the ratios of medians in extra_info
(and prints them).  These machines are shared: absolute figures are noisy, only same-run
ratios mean much.
"""
import time

import numpy as np
import pytest

import fastdrop
from fastdrop.benchmarks import peers
from fastdrop.benchmarks.cases import bf16 as B
from fastdrop.benchmarks.cases import mlp
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()
SHAPES = B.SHAPES
PATHS = B.paths()
GEMM_SIDES = ("fp32",) + PATHS
SIZES = B.MLP_SIZES
BATCH, STEPS, RATE = 128, 24, 0.5
TRAIN_SIDES = GEMM_SIDES + ("torch", "torch_bf16")


def _label(side):
    return "fp32" if side == "fp32" else f"bf16-{side}"


@pytest.mark.parametrize("side", GEMM_SIDES, ids=[_label(s) for s in GEMM_SIDES])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s[0]}-{s[1]}x{s[2]}x{s[3]}" for s in SHAPES])
def test_gemm_bf16(benchmark, threads, record, shape, side):
    name, m, n, k, ta, tb = shape
    a, b, out = B.operands(m, n, k, ta, tb, np.random.default_rng(m * 31 + n * 7 + k))
    threads(ALL_THREADS)
    benchmark.group = f"gemm-bf16 {name} {m}x{n}x{k} {ALL_THREADS}t"
    with B.path_restored():
        benchmark(B.gemm_sides(a, b, out, ta, tb, PATHS)[side])
    record(benchmark, flops=2.0 * m * n * k, side=_label(side), m=m, n=n, k=k,
           threads=ALL_THREADS, cpu=fastdrop.cpu_info().get("bf16"))


@pytest.fixture(scope="module")
def data():
    return mlp.train_data(SIZES, STEPS, BATCH, np.random.default_rng(0))


def _torch_or_skip(side):
    if not side.startswith("torch"):
        return None
    return pytest.importorskip("torch")


@pytest.mark.parametrize("side", TRAIN_SIDES)
def test_mlp_train(benchmark, threads, record, data, side):
    """One training side: samples/s of STEPS steps a round (warmed up first)."""
    torch = _torch_or_skip(side)    # imported first: threads() sets its thread count too
    x, y = data
    threads(ALL_THREADS)
    with B.path_restored():
        fn, steps = B.train_side(side, SIZES, x, y, BATCH, RATE, torch, warmup=True)
        benchmark.group = f"mlp-train-bf16 {B.side_label(side)} {ALL_THREADS}t"
        benchmark.pedantic(fn, rounds=5, iterations=1)
    record(benchmark, samples=steps * BATCH, side=B.side_label(side), threads=ALL_THREADS,
           batch=BATCH, steps_per_round=steps, dropout=RATE)


def test_mlp_train_ab(benchmark, threads, rounds=7):
    """MLP 784-1024-1024-10, batch 128, Dropout 0.5, Adam: samples/s per side, every side
    once per round, in turn."""
    x, y = mlp.train_data(SIZES, STEPS, BATCH, np.random.default_rng(0))
    torch = peers.torch()           # imported first: threads() sets its thread count too
    threads(ALL_THREADS)
    with B.path_restored():
        sides = {k: c for k, c in B.train_sides(SIZES, x, y, BATCH, RATE, torch,
                                                warmup=True).items() if c is not None}
        rates = {k: [] for k in sides}

        def one_round():
            for k, (fn, steps) in sides.items():
                time.sleep(0.2)  # the other side's idle threads (OpenMP, the pool) park first
                t0 = time.perf_counter()
                fn()
                rates[k].append(steps * BATCH / (time.perf_counter() - t0))

        benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    benchmark.group = f"mlp-train-ab {ALL_THREADS}t"
    med = {k: float(np.median(r)) for k, r in rates.items()}
    base, tb = med["fp32"], med.get("torch_bf16")
    lines = []
    for k, r in rates.items():
        label = B.side_label(k)
        info = {"median samples/s": round(med[k], 1),
                "range": [round(min(r), 1), round(max(r), 1)],
                "vs fastdrop fp32": round(med[k] / base, 3)}
        if tb:
            info["vs torch bf16"] = round(med[k] / tb, 3)
        benchmark.extra_info[label] = info
        lines.append(f"{label:40s} median {med[k]:9.1f} samples/s  range {min(r):9.1f}-"
                     f"{max(r):9.1f}  x{med[k] / base:5.2f} of fastdrop fp32"
                     + (f"  x{med[k] / tb:5.2f} of torch bf16" if tb else ""))
    print("\n" + "\n".join(lines))

"""bf16 mixed precision: the bf16 GEMM against the fp32 SGEMM on MLP shapes, and MLP
784-1024-1024-10 training under 'mixed_bfloat16' against float32 (and against PyTorch's
torch.autocast("cpu", torch.bfloat16) when torch is installed).

    pytest bench/bench_bf16.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,ops

GEMM groups: one per shape; fp32 (fastdrop._core.gemm) and every bf16 path this CPU runs
(amx, avx512bf16, portable; fastdrop._core.gemm_bf16), all threads.  extra_info has the
best and median GFLOP/s.

The training case (test_mlp_train_ab) is one benchmark that alternates A/B over rounds
inside the same process — fp32, bf16 per path, then torch fp32 and torch bf16 autocast —
so drift of a shared machine hits every side alike; it reports the median and the range
of samples/s per side and the ratios of medians in extra_info (and prints them).
These machines are shared: absolute figures are noisy, only same-run ratios mean much.
"""
import time

import numpy as np
import pytest

import fastdrop
from fastdrop import _core, mixed_precision
from fastdrop._bench import _cpu_count

ALL_THREADS = _cpu_count()
SHAPES = []
for _b in (128, 256):
    SHAPES += [(f"mlp-{_b}-fwd", _b, 1024, 784, False, False),
               (f"mlp-{_b}-fwd2", _b, 1024, 1024, False, False),
               (f"mlp-{_b}-dW", 1024, 1024, _b, True, False),
               (f"mlp-{_b}-dX", _b, 1024, 1024, False, True)]
SHAPES += [("sq-1024", 1024, 1024, 1024, False, False)]
SIDES = ["fp32"] + [f"bf16-{p}" for p in _core.bf16_paths_supported()]


def _operands(m, n, k, ta, tb):
    rng = np.random.default_rng(m * 31 + n * 7 + k)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    return a, b, np.empty((m, n), np.float32)


def _set_side(side):
    if side.startswith("bf16-"):
        _core.set_bf16_path(side[5:])
        if side == "bf16-portable" and "avx512" in _core.isa_supported():
            _core.set_isa("avx512")
        return _core.gemm_bf16
    return _core.gemm


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s[0]}-{s[1]}x{s[2]}x{s[3]}" for s in SHAPES])
def test_gemm_bf16(benchmark, threads, record, shape, side):
    name, m, n, k, ta, tb = shape
    a, b, out = _operands(m, n, k, ta, tb)
    threads(ALL_THREADS)
    old = _core.bf16_path()
    fn = _set_side(side)
    benchmark.group = f"gemm-bf16 {name} {m}x{n}x{k} {ALL_THREADS}t"
    benchmark.extra_info.update(side=side, m=m, n=n, k=k, threads=ALL_THREADS,
                                cpu=fastdrop.cpu_info().get("bf16"))
    try:
        benchmark(fn, a, b, out, ta, tb, 1.0, 0.0)
    finally:
        if old in _core.bf16_paths_supported():
            _core.set_bf16_path(old)
    record(benchmark, flops=2.0 * m * n * k)


# ------------------------------------------------------------------ training A/B
BATCH, STEPS = 128, 24


def _fd_model(policy):
    from fastdrop.layers import Dense
    from fastdrop.models import Sequential
    m = Sequential([Dense(1024, activation="relu", input_dim=784, dtype=policy),
                    Dense(1024, activation="relu", dtype=policy),
                    Dense(10, activation="softmax", dtype=policy)], seed=0)
    m.compile("adam", "sparse_categorical_crossentropy")
    return m


def _data(n=BATCH * STEPS):
    rng = np.random.default_rng(0)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def _fd_runner(policy, path):
    x, y = _data()
    m = _fd_model(policy)

    def run():
        if path:
            _core.set_bf16_path(path)
        t0 = time.perf_counter()
        m.fit(x, y, epochs=1, batch_size=BATCH, verbose=0, shuffle=False)
        return len(x) / (time.perf_counter() - t0)
    run()  # warm up: allocation, first-touch, bf16 copies
    return run


def _torch_runner(bf16):
    import torch
    x, y = _data()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    net = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                              torch.nn.Linear(1024, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    lossf = torch.nn.CrossEntropyLoss()

    def run():
        t0 = time.perf_counter()
        for i in range(0, len(x), BATCH):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = lossf(net(xt[i:i + BATCH]), yt[i:i + BATCH])
            loss.backward()
            opt.step()
        return len(x) / (time.perf_counter() - t0)
    run()
    return run


def test_mlp_train_ab(benchmark, threads, rounds=7):
    """MLP 784-1024-1024-10, batch 128, Adam: samples/s per side, sides alternating."""
    threads(ALL_THREADS)
    old = _core.bf16_path()
    sides = {"fastdrop fp32": _fd_runner("float32", None)}
    for p in _core.bf16_paths_supported():
        sides[f"fastdrop bf16 {p}"] = _fd_runner("mixed_bfloat16", p)
    try:
        import torch
        torch.set_num_threads(ALL_THREADS)
        sides["torch fp32"] = _torch_runner(False)
        sides["torch bf16 autocast"] = _torch_runner(True)
    except ImportError:
        pass
    rates = {k: [] for k in sides}

    def one_round():
        for k, run in sides.items():
            time.sleep(0.2)  # the other side's idle threads (OpenMP, the pool) park first
            rates[k].append(run())
    try:
        benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    finally:
        if old in _core.bf16_paths_supported():
            _core.set_bf16_path(old)
    benchmark.group = f"mlp-train-ab {ALL_THREADS}t"
    base = float(np.median(rates["fastdrop fp32"]))
    lines = []
    for k, r in rates.items():
        med = float(np.median(r))
        benchmark.extra_info[k] = {"median samples/s": round(med, 1),
                                   "range": [round(min(r), 1), round(max(r), 1)],
                                   "vs fastdrop fp32": round(med / base, 3)}
        lines.append(f"{k:28s} median {med:9.1f} samples/s  range {min(r):9.1f}-{max(r):9.1f}"
                     f"  x{med / base:5.2f} of fastdrop fp32")
    if "torch bf16 autocast" in rates:
        tb = float(np.median(rates["torch bf16 autocast"]))
        for k in rates:
            if k.startswith("fastdrop bf16"):
                benchmark.extra_info[k]["vs torch bf16"] = round(
                    float(np.median(rates[k])) / tb, 3)
    print("\n" + "\n".join(lines))

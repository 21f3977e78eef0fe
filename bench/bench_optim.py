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

from fastdrop import optimizers as O
from fastdrop._bench import _cpu_count
from fastdrop.reference import optimizers as RO

ALL_THREADS = _cpu_count()
SHAPES = [(784, 1024), (1024,), (1024, 1024), (1024,), (1024, 10), (10,)]
SEGS = []
_lo = 0
for _s in SHAPES:
    _n = int(np.prod(_s))
    SEGS.append((_lo, _lo + _n))
    _lo += _n
N = _lo

# name: (fastdrop factory, reference kind + hyperparameters, torch factory, bytes/param)
CASES = {
    "rmsprop": (lambda: O.RMSprop(1e-3), ("rmsprop", {}),
                lambda t, p: t.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7, foreach=True),
                16),
    "rmsprop-centered-momentum": (
        lambda: O.RMSprop(1e-3, momentum=0.9, centered=True),
        ("rmsprop", {"momentum": 0.9, "centered": True}),
        lambda t, p: t.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.9,
                                     centered=True, foreach=True), 24),
    "adagrad": (lambda: O.Adagrad(1e-3), ("adagrad", {}),
                lambda t, p: t.optim.Adagrad(p, lr=1e-3, initial_accumulator_value=0.1,
                                             eps=1e-7, foreach=True), 16),
    "adadelta": (lambda: O.Adadelta(1e-3), ("adadelta", {}),
                 lambda t, p: t.optim.Adadelta(p, lr=1e-3, rho=0.95, eps=1e-7, foreach=True),
                 20),
    "nadam": (lambda: O.Nadam(1e-3), ("nadam", {}),
              lambda t, p: t.optim.NAdam(p, lr=1e-3, eps=1e-7, foreach=True), 20),
    "adam-clipnorm": (lambda: O.Adam(1e-3, clipnorm=1.0), ("adam", {"clipnorm": 1.0}),
                      None, 24),
    "adam-global_clipnorm": (lambda: O.Adam(1e-3, global_clipnorm=1.0),
                             ("adam", {"global_clipnorm": 1.0}), None, 24),
    "adam-clipvalue": (lambda: O.Adam(1e-3, clipvalue=0.01), ("adam", {"clipvalue": 0.01}),
                       None, 20),
}


@pytest.fixture(scope="module")
def block():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(N, dtype=np.float32) * np.float32(0.05)
    g = rng.standard_normal(N, dtype=np.float32) * np.float32(1e-3)
    return w, g


@pytest.mark.parametrize("name", list(CASES))
def test_optim_fastdrop(benchmark, block, threads, record, name):
    w, g = block
    make, _, _, nbytes = CASES[name]
    threads(ALL_THREADS)
    opt = make()
    opt.build(N)
    p = w.copy()
    benchmark.group = f"optim-{name}"
    benchmark(opt.apply, p, g, SEGS)
    record(benchmark, nbytes=nbytes * N, params=N, threads=ALL_THREADS)


@pytest.mark.parametrize("name", list(CASES))
def test_optim_reference(benchmark, block, record, name):
    w, g = block
    _, (kind, hp), _, nbytes = CASES[name]
    variables = [w[a:b].astype(np.float64) for a, b in SEGS]
    grads = [g[a:b].astype(np.float64) for a, b in SEGS]
    slots = RO.init_slots(kind, variables, **hp)
    state = {"t": 0}

    def step():
        state["t"] += 1
        RO.step(kind, variables, grads, slots, state["t"], 1e-3, **hp)

    benchmark.group = f"optim-{name}"
    benchmark.pedantic(step, rounds=5, iterations=1)
    record(benchmark, nbytes=nbytes * N, params=N, threads=1)


@pytest.mark.parametrize("name", [k for k, v in CASES.items() if v[2] is not None])
def test_optim_torch(benchmark, block, threads, record, name):
    torch = pytest.importorskip("torch")
    w, g = block
    threads(ALL_THREADS)
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    p.grad = torch.from_numpy(g.copy())
    opt = CASES[name][2](torch, [p])
    benchmark.group = f"optim-{name}"
    benchmark(opt.step)
    record(benchmark, nbytes=CASES[name][3] * N, params=N, threads=ALL_THREADS)

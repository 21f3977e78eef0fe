"""Whole training steps and inference: fastdrop ``Sequential`` beside the pure-NumPy
``fastdrop.reference.ReferenceTrainer`` and PyTorch (skipped when torch is not
importable), on the same data, one ``benchmark.group`` per model and thread count.

    pytest bench/bench_train.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops

Training: MLPs 784-1024-1024-10 and 784-256-256-10, ReLU, dropout 0.5 after each hidden
layer, softmax cross-entropy, Adam, batch 128, at 1 thread and all threads (set on every
side: fastdrop, NumPy's BLAS via threadpoolctl, torch).  One round is several steps on a
fixed set of batches: fastdrop through the public ``fit(..., steps_per_epoch=k)`` after a
warm-up call that built its buffers (steady state), the reference and torch on the same
batches (the same number of steps per round on every side, so the time columns compare
directly).  ``extra_info["samples/s"]`` is training samples per second (best round).

Inference: ``predict`` of one sample and of a batch of 1024 on 784-256-256-10, and
Monte Carlo dropout with T=50 passes on 784-1024-1024-10 (``predict(x, mc_samples=50)``)
against 50 plain ``predict`` calls on the same inputs.
"""
import numpy as np
import pytest

from fastdrop.benchmarks import peers
from fastdrop.benchmarks.cases import mlp
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

ALL_THREADS = _cpu_count()
BATCH = 128
RATE = 0.5
MODELS = {"784-1024-1024-10": (784, 1024, 1024, 10), "784-256-256-10": (784, 256, 256, 10)}
#: training steps per round, the same for every implementation (so the time columns
#: compare directly); fastdrop's per-fit-call work (epoch snapshot, input checks) is
#: amortised over them as over an epoch
STEPS = {"784-1024-1024-10": 16, "784-256-256-10": 32}
THREADS = sorted({1, ALL_THREADS})


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module", params=list(MODELS), ids=list(MODELS))
def data(request):
    name = request.param
    sizes = MODELS[name]
    steps = STEPS[name]
    x, y = mlp.train_data(sizes, steps, BATCH, np.random.default_rng(0))
    return name, sizes, x, y


def _train_info(benchmark, record, impl, name, nthreads, steps):
    record(benchmark, samples=steps * BATCH, model=name, impl=impl, threads=nthreads,
           batch=BATCH, steps_per_round=steps, dropout=RATE)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_fastdrop(benchmark, data, threads, record, nthreads):
    name, sizes, x, y = data
    threads(nthreads)
    fn, steps, _ = mlp.fastdrop_trainer(sizes, x, y, BATCH, RATE, warmup=False)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=8, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "fastdrop", name, nthreads, steps)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_reference(benchmark, data, threads, record, nthreads):
    name, sizes, x, y = data
    threads(nthreads)
    fn, steps, _ = peers.reference_trainer(sizes, x, y, BATCH, RATE)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "reference", name, nthreads, steps)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_torch(benchmark, data, threads, record, nthreads):
    torch = _torch()
    name, sizes, x, y = data
    threads(nthreads)
    torch.set_num_threads(nthreads)
    fn, steps, _ = peers.torch_mlp_trainer(torch, sizes, x, y, BATCH, RATE, warmup=False)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=8, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "torch", name, nthreads, steps)


# --------------------------------------------------------------------------- predict
SMALL = MODELS["784-256-256-10"]


@pytest.fixture(scope="module")
def small_inputs():
    return np.random.default_rng(1).random((1024, SMALL[0]), dtype=np.float32)


PREDICT_BATCHES = [1, 1024]


def _predict(benchmark, record, small_inputs, batch, side, torch=None):
    fn = mlp.predict_sides(SMALL, RATE, np.ascontiguousarray(small_inputs[:batch]),
                           torch)[side]
    fn()
    benchmark.group = f"predict-784-256-256-10-batch{batch}"
    benchmark(fn)
    record(benchmark, samples=batch, threads=ALL_THREADS)


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_fastdrop(benchmark, small_inputs, threads, record, batch):
    threads(ALL_THREADS)
    _predict(benchmark, record, small_inputs, batch, "fastdrop")


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_reference(benchmark, small_inputs, threads, record, batch):
    threads(ALL_THREADS)
    _predict(benchmark, record, small_inputs, batch, "reference")


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_torch(benchmark, small_inputs, threads, record, batch):
    torch = _torch()
    threads(ALL_THREADS)
    torch.set_num_threads(ALL_THREADS)
    _predict(benchmark, record, small_inputs, batch, "torch", torch)


# ------------------------------------------------------------------ MC dropout, T=50
BIG = MODELS["784-1024-1024-10"]
T = 50
MC_INPUTS = 128


@pytest.fixture(scope="module")
def big_model():
    model = mlp.fastdrop_mlp(BIG, RATE)
    model.build(BIG[0])
    x = np.random.default_rng(2).random((MC_INPUTS, BIG[0]), dtype=np.float32)
    return mlp.mc_sides(model, x, T)


def test_mc_dropout_fastdrop(benchmark, big_model, threads, record):
    threads(ALL_THREADS)
    big_model["mc"]()
    benchmark.group = f"mc-dropout-T{T}-784-1024-1024-10-{MC_INPUTS}inputs"
    benchmark.pedantic(big_model["mc"], rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, samples=MC_INPUTS, passes=T, threads=ALL_THREADS)


def test_mc_dropout_50x_predict(benchmark, big_model, threads, record):
    """The baseline: T plain (dropout off) predictions of the same inputs."""
    threads(ALL_THREADS)
    benchmark.group = f"mc-dropout-T{T}-784-1024-1024-10-{MC_INPUTS}inputs"
    benchmark.pedantic(big_model["predicts"], rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, samples=MC_INPUTS, passes=T, threads=ALL_THREADS)

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

from fastdrop._bench import (_cpu_count, _fastdrop_model, _torch_model, fastdrop_trainer,
                             reference_trainer, torch_trainer)
from fastdrop.reference import ReferenceTrainer

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
    rng = np.random.default_rng(0)
    x = rng.random((steps * BATCH, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], steps * BATCH).astype(np.int64)
    return name, sizes, x, y


def _train_info(benchmark, record, impl, name, nthreads, steps):
    record(benchmark, samples=steps * BATCH, model=name, impl=impl, threads=nthreads,
           batch=BATCH, steps_per_round=steps, dropout=RATE)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_fastdrop(benchmark, data, threads, record, nthreads):
    name, sizes, x, y = data
    threads(nthreads)
    fn, steps, _ = fastdrop_trainer(sizes, x, y, BATCH, RATE, warmup=False)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=8, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "fastdrop", name, nthreads, steps)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_reference(benchmark, data, threads, record, nthreads):
    name, sizes, x, y = data
    threads(nthreads)
    fn, steps, _ = reference_trainer(sizes, x, y, BATCH, RATE)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "reference", name, nthreads, steps)


@pytest.mark.parametrize("nthreads", THREADS, ids=[f"{t}T" for t in THREADS])
def test_train_torch(benchmark, data, threads, record, nthreads):
    torch = _torch()
    name, sizes, x, y = data
    threads(nthreads)
    torch.set_num_threads(nthreads)
    fn, steps, _ = torch_trainer(torch, sizes, x, y, BATCH, RATE, warmup=False)
    benchmark.group = f"train-{name}-{nthreads}T"
    benchmark.pedantic(fn, rounds=8, iterations=1, warmup_rounds=1)
    _train_info(benchmark, record, "torch", name, nthreads, steps)


# --------------------------------------------------------------------------- predict
SMALL = MODELS["784-256-256-10"]


@pytest.fixture(scope="module")
def small_models():
    model = _fastdrop_model(SMALL, RATE)
    model.build(SMALL[0])
    ref = ReferenceTrainer(list(SMALL), rate=RATE, seed=0)
    x = np.random.default_rng(1).random((1024, SMALL[0]), dtype=np.float32)
    return model, ref, x


PREDICT_BATCHES = [1, 1024]


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_fastdrop(benchmark, small_models, threads, record, batch):
    model, _, x = small_models
    threads(ALL_THREADS)
    xb = np.ascontiguousarray(x[:batch])
    model.predict(xb)
    benchmark.group = f"predict-784-256-256-10-batch{batch}"
    benchmark(model.predict, xb)
    record(benchmark, samples=batch, threads=ALL_THREADS)


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_reference(benchmark, small_models, threads, record, batch):
    _, ref, x = small_models
    threads(ALL_THREADS)
    xb = np.ascontiguousarray(x[:batch])
    benchmark.group = f"predict-784-256-256-10-batch{batch}"
    benchmark(ref.predict, xb)
    record(benchmark, samples=batch, threads=ALL_THREADS)


@pytest.mark.parametrize("batch", PREDICT_BATCHES, ids=[f"batch{b}" for b in PREDICT_BATCHES])
def test_predict_torch(benchmark, small_models, threads, record, batch):
    torch = _torch()
    _, _, x = small_models
    threads(ALL_THREADS)
    torch.set_num_threads(ALL_THREADS)
    tm, _ = _torch_model(torch, SMALL, RATE)
    tm.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x[:batch]))

    def predict():
        with torch.inference_mode():
            return torch.nn.functional.softmax(tm(xt), dim=1)

    benchmark.group = f"predict-784-256-256-10-batch{batch}"
    benchmark(predict)
    record(benchmark, samples=batch, threads=ALL_THREADS)


# ------------------------------------------------------------------ MC dropout, T=50
BIG = MODELS["784-1024-1024-10"]
T = 50
MC_INPUTS = 128


@pytest.fixture(scope="module")
def big_model():
    model = _fastdrop_model(BIG, RATE)
    model.build(BIG[0])
    x = np.random.default_rng(2).random((MC_INPUTS, BIG[0]), dtype=np.float32)
    return model, x


def test_mc_dropout_fastdrop(benchmark, big_model, threads, record):
    model, x = big_model
    threads(ALL_THREADS)
    model.predict(x, mc_samples=T, seed=0)
    benchmark.group = f"mc-dropout-T{T}-784-1024-1024-10-{MC_INPUTS}inputs"
    benchmark.pedantic(model.predict, (x,), {"mc_samples": T, "seed": 0}, rounds=5,
                       iterations=1, warmup_rounds=1)
    record(benchmark, samples=MC_INPUTS, passes=T, threads=ALL_THREADS)


def test_mc_dropout_50x_predict(benchmark, big_model, threads, record):
    """The baseline: T plain (dropout off) predictions of the same inputs."""
    model, x = big_model
    threads(ALL_THREADS)

    def many():
        for _ in range(T):
            model.predict(x)

    benchmark.group = f"mc-dropout-T{T}-784-1024-1024-10-{MC_INPUTS}inputs"
    benchmark.pedantic(many, rounds=5, iterations=1, warmup_rounds=1)
    record(benchmark, samples=MC_INPUTS, passes=T, threads=ALL_THREADS)

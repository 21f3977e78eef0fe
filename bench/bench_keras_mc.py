"""Monte Carlo dropout on a model loaded from a Keras file: fastdrop's
``predict(x, mc_samples=30)`` against Keras's own loop of 30 ``model(x, training=True)``
calls on the same data (KERAS_BACKEND=torch; the same number of threads for both).

    KERAS_BACKEND=torch pytest bench/bench_keras_mc.py --benchmark-only \
        --benchmark-columns=min,median,rounds -s

``test_ratio`` times the two in alternating rounds and prints the median ratio (Keras /
fastdrop); it records it in the benchmark's extra_info and asserts nothing about time.
Models: an MLP 784-512-512-10 with Dropout(0.5) after each hidden layer, and a small CNN
(Conv2D 32 + BN + SpatialDropout2D, Conv2D 64, pooling, Dropout, Dense 10) on 28x28x1.
"""
import os
import statistics
import time

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import fastdrop  # noqa: E402
from fastdrop.benchmarks import peers  # noqa: E402
from fastdrop.benchmarks.harness import cpu_count as _cpu_count  # noqa: E402
from fastdrop.models import load_model  # noqa: E402

T = 30
N = int(os.environ.get("FASTDROP_BENCH_N", "512"))
THREADS = _cpu_count()


def _mlp():
    return peers.keras_model("mlp"), np.random.default_rng(0).random((N, 784),
                                                                     dtype=np.float32)


def _cnn():
    return peers.keras_model("cnn"), np.random.default_rng(0).random((N, 28, 28, 1),
                                                                     dtype=np.float32)


MODELS = {"mlp": _mlp, "cnn": _cnn}


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request, tmp_path_factory):
    torch.set_num_threads(THREADS)
    fastdrop.set_num_threads(THREADS)
    km, x = MODELS[request.param]()
    km.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    p = tmp_path_factory.mktemp("k") / f"{request.param}.keras"
    km.save(p)
    fm = load_model(p)
    np.testing.assert_allclose(fm.predict(x[:64]), np.asarray(km.predict(x[:64], verbose=0)),
                               rtol=1e-4, atol=1e-5)
    xt = torch.from_numpy(x)
    return request.param, km, fm, x, xt


def keras_mc(km, xt):
    return peers.keras_mc(km, xt, T)


def fastdrop_mc(fm, x):
    return fm.predict(x, mc_samples=T, seed=0)


def test_keras_training_loop(benchmark, pair):
    name, km, fm, x, xt = pair
    benchmark.group = f"mc-{name}"
    benchmark(keras_mc, km, xt)


def test_fastdrop_mc(benchmark, pair):
    name, km, fm, x, xt = pair
    benchmark.group = f"mc-{name}"
    benchmark(fastdrop_mc, fm, x)


def test_ratio(benchmark, pair):
    """Median over alternating rounds of time(Keras loop) / time(fastdrop MC)."""
    name, km, fm, x, xt = pair
    keras_mc(km, xt)
    fastdrop_mc(fm, x)
    ratios, tk, tf = [], [], []
    for _ in range(7):
        t0 = time.perf_counter()
        keras_mc(km, xt)
        t1 = time.perf_counter()
        fastdrop_mc(fm, x)
        t2 = time.perf_counter()
        tk.append(t1 - t0)
        tf.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    r = statistics.median(ratios)
    benchmark.extra_info.update(ratio=r, keras_s=statistics.median(tk),
                                fastdrop_s=statistics.median(tf), threads=THREADS, T=T, n=N)
    print(f"\n[{name}] MC T={T}, {N} samples, {THREADS} threads: Keras loop "
          f"{statistics.median(tk) * 1e3:.1f} ms, fastdrop {statistics.median(tf) * 1e3:.1f} "
          f"ms, ratio {r:.1f}x (median of 7 alternating rounds)")
    benchmark.pedantic(fastdrop_mc, args=(fm, x), rounds=1, iterations=1)

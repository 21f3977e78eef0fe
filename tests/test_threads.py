"""Thread safety: Python threads sharing models and kernels give the serial answers.

* ``predict`` (plain and Monte Carlo) from 8 threads on one model == serial calls.
* ``fit`` on one model while ``predict`` (or another ``fit``) runs on another == serial.
* ``fastdrop.set_num_threads`` toggled from another thread during fit/predict: no crash,
  results bitwise equal (training and inference are thread-count invariant by design).
* ``kernels.gemm`` / ``dropout`` / ``relu`` / ``softmax_cross_entropy`` from several
  threads at once == their serial results (and dropout == the reference bit for bit).
* GEMM gives correct results when OpenMP hands it fewer threads than it asked for
  (``OMP_THREAD_LIMIT``, ``OMP_DYNAMIC``), in a subprocess.

Kernels release the GIL, so these threads really overlap inside the C code.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastdrop
from fastdrop import Dense, Dropout, Sequential, kernels as K, reference as R
from fastdrop.optimizers import Adam

N_THREADS = 8


from helpers import blobs  # noqa: E402


def make(seed, d=20):
    m = Sequential([Dense(64, activation="relu", input_dim=d), Dropout(0.3),
                    Dense(32, activation="relu"), Dropout(0.2),
                    Dense(4, activation="softmax")], seed=seed)
    m.compile(Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def trained(seed, x, y, epochs=2):
    m = make(seed)
    m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return m


def run_threads(fns):
    """Start all callables together (barrier) and return their results; re-raise the first
    exception of any thread."""
    barrier = threading.Barrier(len(fns))

    def wrap(fn):
        def go():
            barrier.wait()
            return fn()
        return go

    with ThreadPoolExecutor(len(fns)) as ex:
        futures = [ex.submit(wrap(fn)) for fn in fns]
        return [f.result(timeout=300) for f in futures]


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()


def assert_weights_equal(m1, m2):
    for w1, w2 in zip(m1.get_weights(), m2.get_weights()):
        assert_bitwise(w1, w2)


@pytest.fixture
def fine_switching():
    """Switch Python threads every 0.1 ms (default 5 ms) so that they interleave often."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


# ------------------------------------------------------------------- models
def test_predict_from_8_threads_on_one_model(fine_switching):
    x, y = blobs(600)
    model = trained(1, x, y)
    inputs = [blobs(n, seed=10 + i)[0] for i, n in
              enumerate([1, 7, 64, 300, 1100, 2500, 33, 600])]   # > 1024: several batches
    serial = [model.predict(xi) for xi in inputs]
    serial_mc = [model.predict(xi[:50], mc_samples=3, seed=i) for i, xi in enumerate(inputs)]

    def worker(i):
        def fn():
            out = []
            for _ in range(4):
                out.append(("p", model.predict(inputs[i])))
                out.append(("mc", model.predict(inputs[i][:50], mc_samples=3, seed=i)))
            return out
        return fn

    results = run_threads([worker(i) for i in range(N_THREADS)])
    for i, res in enumerate(results):
        for kind, r in res:
            if kind == "p":
                assert_bitwise(r, serial[i])
            else:
                assert_bitwise(r[0], serial_mc[i][0])
                assert_bitwise(r[1], serial_mc[i][1])


def test_fit_one_model_while_predicting_on_another(fine_switching):
    xa, ya = blobs(3000, seed=1)
    xb, yb = blobs(500, seed=2)
    ref_a = trained(7, xa, ya, epochs=3)
    b = trained(8, xb, yb)
    ref_pred = b.predict(xb)

    a = make(7)
    done = threading.Event()

    def fit():
        try:
            return a.fit(xa, ya, epochs=3, batch_size=32, verbose=0).history
        finally:
            done.set()

    def predict_loop():
        outs, n = [], 0
        while not done.is_set() or n < 3:
            outs.append(b.predict(xb))
            n += 1
        return outs

    hist, *preds = run_threads([fit, predict_loop, predict_loop])
    assert_weights_equal(a, ref_a)
    assert hist == ref_a.history.history
    for outs in preds:
        assert len(outs) >= 3
        for p in outs:
            assert_bitwise(p, ref_pred)


def test_two_fits_on_two_models_concurrently():
    xa, ya = blobs(500, seed=3)
    refs = [trained(s, xa, ya, epochs=2) for s in (21, 22)]
    models = [make(21), make(22)]
    run_threads([lambda m=m: m.fit(xa, ya, epochs=2, batch_size=32, verbose=0)
                 for m in models])
    for m, r in zip(models, refs):
        assert_weights_equal(m, r)


@pytest.mark.filterwarnings("ignore:set_num_threads.*more than the cores:RuntimeWarning")
def test_set_num_threads_toggled_during_fit_and_predict(threads, fine_switching):
    x, y = blobs(3000, seed=4)
    xp = blobs(3000, seed=5)[0]
    threads(None)
    ref = trained(31, x, y, epochs=2)
    ref_pred = ref.predict(xp)
    ref_mc = ref.predict(xp[:200], mc_samples=4, seed=9)

    stop = threading.Event()
    toggles = [0]

    def toggler():
        rng = np.random.default_rng(0)
        while not stop.is_set():
            fastdrop.set_num_threads(int(rng.choice([1, 2, 3, 4, 0])))
            toggles[0] += 1
            time.sleep(0.0002)

    t = threading.Thread(target=toggler, daemon=True)
    t.start()
    try:
        m = make(31)
        m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        preds = [m.predict(xp) for _ in range(5)]
        mc = m.predict(xp[:200], mc_samples=4, seed=9)
    finally:
        stop.set()
        t.join()
    assert toggles[0] > 0          # the toggler ran concurrently (count depends on speed)
    assert_weights_equal(m, ref)
    for p in preds:
        assert_bitwise(p, ref_pred)
    assert_bitwise(mc[0], ref_mc[0])
    assert_bitwise(mc[1], ref_mc[1])


# ------------------------------------------------------------------ kernels
def _kernel_jobs():
    rng = np.random.default_rng(6)
    jobs = []
    for i, (m, n, k, ta, tb) in enumerate([(257, 129, 300, False, False), (64, 10, 784, False, True),
                                           (10, 300, 128, True, False), (333, 17, 65, True, True),
                                           (1, 512, 256, False, False), (128, 128, 128, False, False)]):
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        jobs.append(("gemm", (a, b, ta, tb)))
    for n, rate, seed in [(1, 0.5, 1), (4097, 0.3, 2**63 + 5), (100_003, 0.5, 3), (65536, 0.9, 4),
                          (12345, 0.1, 5), (300_000, 0.25, 6)]:
        jobs.append(("dropout", (rng.standard_normal(n, dtype=np.float32), rate, seed)))
    jobs.append(("relu", (rng.standard_normal(200_001, dtype=np.float32),)))
    jobs.append(("xent", (rng.standard_normal((512, 10), dtype=np.float32),
                          rng.integers(0, 10, 512))))
    return jobs


def _run_job(job):
    kind, args = job
    if kind == "gemm":
        a, b, ta, tb = args
        return (K.gemm(a, b, trans_a=ta, trans_b=tb),)
    if kind == "dropout":
        x, rate, seed = args
        y, mask = K.dropout(x, rate, seed)
        return y, mask, K.dropout_backward(x, mask, rate)
    if kind == "relu":
        return (K.relu(args[0]),)
    loss, grad = K.softmax_cross_entropy(*args)
    return np.float64(loss), grad


def test_kernels_from_several_threads_give_serial_and_reference_answers(fine_switching):
    jobs = _kernel_jobs()
    serial = [_run_job(j) for j in jobs]
    for job, res in zip(jobs, serial):          # the serial answers are the right ones
        kind, args = job
        if kind == "gemm":
            a, b, ta, tb = args
            np.testing.assert_allclose(res[0], R.gemm(a, b, trans_a=ta, trans_b=tb),
                                       rtol=1e-4, atol=1e-3)
        elif kind == "dropout":
            x, rate, seed = args
            y, mask = R.dropout(x, rate, seed)
            assert_bitwise(res[0], y)
            assert_bitwise(res[1], mask)

    def worker(w):
        def fn():
            out = []
            order = np.random.default_rng(w).permutation(len(jobs))
            for _ in range(3):
                for j in order:
                    out.append((j, _run_job(jobs[j])))
            return out
        return fn

    for res in run_threads([worker(w) for w in range(6)]):
        for j, r in res:
            for got, want in zip(r, serial[j]):
                assert_bitwise(got, want)


_OMP_SCRIPT = textwrap.dedent("""
    import os
    import numpy as np, fastdrop
    from fastdrop import kernels as K, reference as R
    # more threads than CPUs, so that OMP_DYNAMIC=true always grants fewer
    fastdrop.set_num_threads(min(64, max(4, 2 * (os.cpu_count() or 1) + 1)))
    rng = np.random.default_rng(0)
    worst = 0.0
    for m, n, k, ta, tb in [(300, 250, 200, False, False), (257, 64, 96, True, False),
                            (96, 200, 64, False, True)]:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        out = np.full((m, n), np.nan, np.float32)
        K.gemm(a, b, out, trans_a=ta, trans_b=tb)
        want = R.gemm(a, b, trans_a=ta, trans_b=tb)
        worst = max(worst, float(np.nan_to_num(np.abs(out - want), nan=np.inf).max()))
    print(worst)
""")


@pytest.mark.skipif(not fastdrop.cpu_info()["openmp"], reason="built without OpenMP")
@pytest.mark.parametrize("env", ["OMP_THREAD_LIMIT=1", "OMP_THREAD_LIMIT=3",
                                 "OMP_DYNAMIC=true"])
def test_gemm_correct_when_openmp_grants_fewer_threads(env):
    key, value = env.split("=")
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))
    r = subprocess.run([sys.executable, "-c", _OMP_SCRIPT], capture_output=True, text=True,
                       cwd=here, env={**os.environ, key: value}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip()) < 1e-3, f"{env}: max |gemm - reference| = {r.stdout}"

"""fastdrop against onnxruntime running fastdrop's own ONNX export of the same model
(``model.export(path, format='onnx')``), on Keras's mnist_convnet
(Conv2D(32, 3, relu) - MaxPool 2 - Conv2D(64, 3, relu) - MaxPool 2 - Flatten -
Dropout(0.5) - Dense(10, softmax), input 28x28x1).  Skipped without onnx / onnxruntime.

    pytest bench/bench_onnx.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,ops
    python bench/bench_onnx.py [--rounds 7]        # the alternating A/B ratios only

Same threads on both sides: ``fastdrop.set_num_threads(2)``; onnxruntime with
``intra_op_num_threads=2``, ``inter_op_num_threads=1``, ``session.intra_op.allow_spinning
= "0"`` (no busy-waiting workers), default graph optimization (ORT_ENABLE_ALL).

Cases: ``predict`` at batch 256 and batch 1 against ``session.run`` of the deterministic
export; Monte Carlo dropout T=30 (``predict(x, mc_samples=30)``: mean and std of 30
stochastic passes) against 30 runs of the ``mc_dropout=True`` export (each run one pass,
fresh masks) with the mean and std taken in NumPy — and, as a second onnxruntime baseline,
one run of the MC export on the batch tiled 30 times (every row draws its own masks, so
that is 30 passes too).

The ``test_ratio_*`` benchmarks alternate A (fastdrop) and B (onnxruntime) in every round
(>= 5 rounds, after a warm-up of each) so that machine load hits both alike, and record
the per-round ratios time(B) / time(A) (> 1: fastdrop faster) with their median and range
in ``extra_info``.
"""
import os
import sys
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastdrop  # noqa: E402
from fastdrop.benchmarks.cases import cnn  # noqa: E402

THREADS = 2
T = 30
ROUNDS = 7
#: timed repetitions inside one round, per case (a round is ~50-300 ms per side)
REPS = {"predict-b256": 3, "predict-b1": 200, "mc30-b256": 1, "mc30-b1": 20}
mnist_convnet = cnn.mnist_convnet


def cases(model, x256, x1):
    """{case: (fastdrop fn, onnxruntime fn[, onnxruntime on the tiled batch])} on the same
    inputs (``fastdrop.benchmarks.cases.cnn.onnx_sides``)."""
    b256 = cnn.onnx_sides(model, x256, T, THREADS)
    b1 = cnn.onnx_sides(model, x1, T, THREADS)
    return {"predict-b256": b256["predict"], "predict-b1": b1["predict"],
            "mc30-b256": b256["mc"], "mc30-b1": b1["mc"]}


def _timed(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def alternate(a, b, reps, rounds=ROUNDS):
    """Per-round times of A and B, alternating A, B in every round after one warm-up
    call of each; returns (times_a, times_b, ratios b/a)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(_timed(a, reps))
        tb.append(_timed(b, reps))
    ta, tb = np.array(ta), np.array(tb)
    return ta, tb, tb / ta


def summary(name, ta, tb, r, b_name="onnxruntime"):
    return (f"{name:14s} fastdrop {np.median(ta) * 1e3:9.3f} ms  {b_name} "
            f"{np.median(tb) * 1e3:9.3f} ms  ratio {b_name}/fastdrop median {np.median(r):5.2f}x "
            f"range [{r.min():.2f}, {r.max():.2f}] over {len(r)} rounds")


# ---------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def setup():
    old = fastdrop.get_num_threads()
    fastdrop.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    model = mnist_convnet()
    x256 = rng.random((256, 28, 28, 1), dtype=np.float32)
    x1 = np.ascontiguousarray(x256[:1])
    yield model, cases(model, x256, x1)
    fastdrop.set_num_threads(old)


CASES = list(REPS)


@pytest.mark.parametrize("case", CASES)
def test_fastdrop(benchmark, setup, case):
    fastdrop.set_num_threads(THREADS)
    fn = setup[1][case][0]
    benchmark.group = f"onnx-mnist_convnet-{case}"
    benchmark.extra_info.update(impl="fastdrop", threads=THREADS)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=REPS[case], warmup_rounds=1)


@pytest.mark.parametrize("case", CASES)
def test_onnxruntime(benchmark, setup, case):
    fastdrop.set_num_threads(THREADS)
    fn = setup[1][case][1]
    benchmark.group = f"onnx-mnist_convnet-{case}"
    benchmark.extra_info.update(impl="onnxruntime " + ort.__version__, threads=THREADS)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=REPS[case], warmup_rounds=1)


@pytest.mark.parametrize("case", ["mc30-b256", "mc30-b1"])
def test_onnxruntime_tiled(benchmark, setup, case):
    fastdrop.set_num_threads(THREADS)
    fn = setup[1][case][2]
    benchmark.group = f"onnx-mnist_convnet-{case}"
    benchmark.extra_info.update(impl="onnxruntime, one run on the 30x tiled batch",
                                threads=THREADS)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=REPS[case], warmup_rounds=1)


@pytest.mark.parametrize("case", CASES)
def test_ratio(benchmark, setup, case):
    """A and B alternated in each round; ratios time(onnxruntime) / time(fastdrop)."""
    fastdrop.set_num_threads(THREADS)
    fns = setup[1][case]
    res = {}

    def run():
        res["ab"] = alternate(fns[0], fns[1], REPS[case])
        if len(fns) > 2:
            res["tiled"] = alternate(fns[0], fns[2], REPS[case])

    benchmark.group = f"onnx-ratio-{case}"
    benchmark.pedantic(run, rounds=1, iterations=1)
    ta, tb, r = res["ab"]
    benchmark.extra_info.update(ratio_median=round(float(np.median(r)), 3),
                                ratio_min=round(float(r.min()), 3),
                                ratio_max=round(float(r.max()), 3), rounds=len(r),
                                fastdrop_ms=round(float(np.median(ta)) * 1e3, 3),
                                onnxruntime_ms=round(float(np.median(tb)) * 1e3, 3))
    if "tiled" in res:
        r2 = res["tiled"][2]
        benchmark.extra_info.update(tiled_ratio_median=round(float(np.median(r2)), 3),
                                    tiled_ratio_min=round(float(r2.min()), 3),
                                    tiled_ratio_max=round(float(r2.max()), 3))
    print("\n" + summary(case, ta, tb, r))


# ---------------------------------------------------------------------- script
def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=ROUNDS)
    args = p.parse_args(argv)
    if args.rounds < 5:
        p.error("--rounds must be >= 5")
    fastdrop.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    model = mnist_convnet()
    x256 = rng.random((256, 28, 28, 1), dtype=np.float32)
    x1 = np.ascontiguousarray(x256[:1])
    info = fastdrop.cpu_info()
    print(f"fastdrop {info['version']} ({info['isa']}), onnxruntime {ort.__version__}, "
          f"{THREADS} threads each, os.cpu_count()={os.cpu_count()}")
    for name, fns in cases(model, x256, x1).items():
        ta, tb, r = alternate(fns[0], fns[1], REPS[name], args.rounds)
        print(summary(name, ta, tb, r))
        if len(fns) > 2:
            ta, tb, r = alternate(fns[0], fns[2], REPS[name], args.rounds)
            print(summary(name, ta, tb, r, "ort-tiled"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every benchmark case of ``fastdrop.benchmarks.cases`` runs in a tiny configuration: each
side of each case function is called once on small inputs (fastdrop's side checked against
its baseline where both compute the same thing), and each family's ``bench(ctx)`` section
runs on a plan of tiny sizes.  The pytest-benchmark files under ``bench/`` and
``python -m fastdrop bench`` call these same functions.  Nothing here is timed: performance
is tracked by the benchmarks, not by tests."""
import ast
import math
import os

import numpy as np
import pytest

import fastdrop
from fastdrop.benchmarks import harness, peers, report, runner, targets
from fastdrop.benchmarks.cases import (FAMILIES, activations, bf16, cnn, common, dropout, gemm,
                                       losses, mlp, optim, rnn)


def _call_all(sides):
    """Call every side that exists once; returns the names called."""
    called = []
    for name, fn in sides.items():
        if fn is not None:
            fn()
            called.append(name)
    return called


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _threads():
    old = fastdrop.get_num_threads()
    yield
    fastdrop.set_num_threads(old)


@pytest.mark.parametrize("api", ["core", "public"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_gemm_sides_agree(rng, api, ta, tb):
    a, b, out = gemm.operands(7, 5, 9, ta, tb, rng)
    out_np = np.empty_like(out)
    s = gemm.gemm_sides(a, b, out, ta, tb, out_numpy=out_np, api=api)
    assert _call_all(s) == ["fastdrop", "numpy"]
    np.testing.assert_allclose(out, out_np, rtol=1e-5, atol=1e-5)


def test_bias_sides(rng):
    x, b, out, col = gemm.bias_operands(6, 10, rng)
    s = gemm.bias_add_sides(x, b, out)
    _call_all(s)
    np.testing.assert_allclose(out, x + b, rtol=1e-6)
    c = gemm.colsum_sides(x, col)
    c["fastdrop"]()
    np.testing.assert_allclose(col, x.sum(0), rtol=1e-5, atol=1e-5)
    assert _call_all(c) == ["fastdrop", "numpy"]


@pytest.mark.parametrize("api", ["core", "public"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_dropout_sides(rng, api, direction):
    from fastdrop import reference as R
    x, y, mask = dropout.arrays(1000, rng)
    s = dropout.dropout_sides(direction, x, y, mask, api=api)
    s["fastdrop"]()
    if direction == "forward":
        want = R.dropout(x, 0.5, dropout.SEED)[0]
    else:
        want = R.dropout_backward(x, mask, 0.5)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    assert _call_all(s) == ["fastdrop", "memcpy", "reference"]
    s = dropout.dropout_sides(direction, x, y, mask, baselines=False)
    assert s["reference"] is None and s["torch"] is None


@pytest.mark.parametrize("api", ["core", "public"])
@pytest.mark.parametrize("kernel", activations.RELU_KERNELS)
def test_relu_sides(rng, api, kernel):
    x, g, y, out = activations.arrays(500, rng)
    s = activations.relu_sides(kernel, x, g, y, out, api=api)
    s["fastdrop"]()
    want = y if kernel == "relu" else g * (x > 0)
    np.testing.assert_array_equal(out, want)
    assert _call_all(s) == ["fastdrop", "numpy", "reference", "memcpy"]


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_activation_sides(rng, name, direction):
    from fastdrop import _core
    x = rng.standard_normal(300).astype(np.float32)
    g = rng.standard_normal(300).astype(np.float32)
    out, d = np.empty_like(x), np.empty_like(x)
    if direction == "backward":
        _core.act_forward(name, x, out)
    s = activations.act_sides(name, direction, x, g, out, d)
    with np.errstate(all="ignore"):
        called = _call_all(s)
    assert called[0] == "fastdrop" and "memcpy" in called
    assert s["torch"] is None


@pytest.mark.parametrize("name", activations.names())
def test_activation_baselines_compute_the_activation(rng, name):
    """The float32 NumPy (and, where installed, torch) baselines compute the same function
    as the float64 reference: a benchmark against a different function measures nothing."""
    from fastdrop.benchmarks import peers
    from fastdrop.reference import activations as RA
    x = (rng.standard_normal(400) * 3).astype(np.float32)
    want = RA.forward(name, x.astype(np.float64))
    f32 = peers.numpy32_activation(name)
    if f32 is not None:
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(f32(x), want, rtol=2e-5, atol=2e-6)
    try:
        import torch
    except ImportError:
        return
    tf = peers.torch_activations(torch).get(name)
    if tf is not None:
        np.testing.assert_allclose(tf(torch.from_numpy(x)).numpy(), want, rtol=2e-5,
                                   atol=2e-6)


def test_loss_sides(rng):
    logits, labels, grad = losses.xent_arrays(16, 7, rng)
    for api in ("core", "public"):
        assert _call_all(losses.xent_sides(logits, labels, grad, api)) == ["fastdrop",
                                                                           "reference"]
    assert np.all(np.isfinite(grad))
    z, t, g = losses.bce_arrays((16, 3), rng)
    assert _call_all(losses.bce_sides(z, t, g)) == ["fastdrop", "reference"]


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_optimizer_sides(rng, name):
    segs, n = optim.segments([(4, 3), (3,)])
    w, g = optim.block(n, rng)
    s = optim.optimizer_sides(name, w, g, segs)
    assert _call_all(s) == ["fastdrop", "reference"]


def test_adam_sides(rng):
    for api in ("core", "public"):
        arrays = optim.adam_arrays(100, rng)
        assert _call_all(optim.adam_sides(*arrays, api=api)) == ["fastdrop", "reference"]
    optim.adam_subnormal_step(99)()


def test_mlp_sides(rng):
    sizes = (12, 8, 3)
    x, y = mlp.train_data(sizes, 2, 4, rng)
    s = mlp.train_sides(sizes, x, y, 4, 0.5, ref_steps=1)
    assert {k: steps for k, (_, steps) in s.items()} == {"fastdrop": 2, "reference": 1}
    for fn, _ in s.values():
        fn()
    assert _call_all(mlp.predict_sides(sizes, 0.5, x[:1])) == ["fastdrop", "reference"]
    model = mlp.fastdrop_mlp(sizes, 0.5)
    assert _call_all(mlp.mc_sides(model, x[:3], 2)) == ["mc", "predicts"]


def test_cnn_sides(rng):
    for name, case in cnn.CONV_LAYERS.items():
        layer, stage, x, dy = cnn.conv_layer(case, 2, rng)
        s = cnn.conv_sides(case, layer, stage, x, dy, ref_batch=1)
        assert _call_all(s) == ["fastdrop", "reference"], name
        assert cnn.conv_flops(case, 2) > 0
    for name, make in cnn.MODELS.items():
        img = cnn.images(4, rng)
        fn = common.fit_epoch(make(), img, np.arange(4) % 10, 2)
        fn()
    model = cnn.mnist_convnet()
    assert _call_all(cnn.predict_sides(model, cnn.images(1, rng))) == ["fastdrop"]


def test_rnn_sides(rng):
    x, dy = rnn.step_data(2, rng)
    for case in rnn.CELLS:
        layer, stage = rnn.rnn_layer(case, 2, rng)
        s = rnn.rnn_sides(case, layer, stage, x, dy, ref_batch=1)
        assert _call_all(s) == ["fastdrop", "reference"], case
        assert rnn.step_flops(rnn.CELLS[case][2], 2) > 0
    for cell in ("lstm", "gru"):
        common.fit_epoch(rnn.classifier(cell, 0.25), rnn.sequences(2, rng),
                             np.zeros(2, np.int64), 2)()


def test_peer_torch_sides(rng):
    """The PyTorch side of every case that has one, on tiny inputs."""
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    try:
        x = rng.standard_normal(64).astype(np.float32)
        y = np.empty_like(x)
        fwd, bwd = peers.torch_dropout(torch, x, 0.5)
        fwd(), bwd()
        for name in activations.names():
            tf = activations.act_sides(name, "forward", x, x, y, y, torch)["torch"]
            if tf is not None:          # None: torch has no such op (sparse_plus, ...)
                tf()
        sizes = (12, 8, 3)
        xs, ys = mlp.train_data(sizes, 2, 4, rng)
        s = mlp.train_sides(sizes, xs, ys, 4, 0.5, torch=torch, ref_steps=1)
        s["torch"][0]()
        mlp.predict_sides(sizes, 0.5, xs[:1], torch)["torch"]()
        for name, case in cnn.CONV_LAYERS.items():
            layer, stage, xi, dy = cnn.conv_layer(case, 2, rng)
            s = cnn.conv_sides(case, layer, stage, xi, dy, torch=torch)
            s["torch"](), s["torch_cl"]()
        img = cnn.images(2, rng)
        lab = np.zeros(2, np.int64)
        for name, make in cnn.MODELS.items():
            s = common.train_sides(name, make(), img, lab, 2, torch, channels_last=True)
            s["torch"](), s["torch_cl"]()
        cnn.predict_sides(cnn.mnist_convnet(), img[:1], torch)["torch"]()
        xr, dyr = rnn.step_data(2, rng)
        for case in ("lstm", "gru"):
            layer, stage = rnn.rnn_layer(case, 2, rng)
            rnn.rnn_sides(case, layer, stage, xr, dyr, torch=torch)["torch"]()
            s = common.train_sides(case, rnn.classifier(case), rnn.sequences(2, rng), lab,
                                       2, torch)
            s["torch"]()
        segs, n = optim.segments([(4, 3), (3,)])
        w, g = optim.block(n, rng)
        for name, (_, _, tmake, _) in optim.OPTIMIZERS.items():
            if tmake is not None:
                optim.optimizer_sides(name, w, g, segs, torch)["torch"]()
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------ bf16


@pytest.fixture
def _bf16_state():
    """The chosen bf16 path and the global dtype policy must be as found after each test."""
    from fastdrop import _core, mixed_precision
    path = _core.bf16_path()
    yield
    assert mixed_precision.global_policy().name == "float32"
    assert _core.bf16_path() == path


def test_bf16_paths():
    from fastdrop import _core
    ps = bf16.paths()
    assert ps and set(ps) <= set(_core.BF16_PATHS)
    assert set(ps) <= set(_core.bf16_paths_supported())
    names = [s[0] for s in bf16.SHAPES]
    assert len(names) == len(set(names)) == 9 and "sq-1024" in names
    assert bf16.mlp_shapes(4, (20, 16)) == [
        ("mlp-4-fwd", 4, 16, 20, False, False), ("mlp-4-fwd2", 4, 16, 16, False, False),
        ("mlp-4-dW", 16, 16, 4, True, False), ("mlp-4-dX", 4, 16, 16, False, True)]


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_bf16_gemm_sides_agree(rng, _bf16_state, ta, tb):
    """Every bf16 path computes the fp32 product of the bf16-rounded operands (the products
    of bf16 values are exact in fp32); fp32 is the SGEMM."""
    a, b, _ = bf16.operands(7, 5, 9, ta, tb, rng)
    ps = bf16.paths()
    outs = {k: np.full((7, 5), np.nan, np.float32) for k in ("fp32",) + ps}
    s = bf16.gemm_sides(a, b, outs, ta, tb)
    assert _call_all(s) == ["fp32", *ps]
    np.testing.assert_allclose(outs["fp32"], (a.T if ta else a) @ (b.T if tb else b),
                               rtol=1e-5, atol=1e-5)
    ra, rb = bf16.bf16_rounded(a), bf16.bf16_rounded(b)
    assert not np.array_equal(ra, a)
    want = (ra.T if ta else ra) @ (rb.T if tb else rb)
    for p in ps:
        np.testing.assert_allclose(outs[p], want, rtol=1e-5, atol=1e-5, err_msg=p)


def test_bf16_sides_select_their_path(rng, _bf16_state):
    """A bf16 side sets its own path, whatever ran before it (sides interleave)."""
    from fastdrop import _core
    a, b, out = bf16.operands(4, 4, 4, False, False, rng)
    with bf16.path_restored():
        for p in bf16.paths():
            bf16.gemm_sides(a, b, out, paths_=[p])[p]()
            assert _core.bf16_path() == p


def test_bf16_policy_restored():
    from fastdrop import mixed_precision
    with pytest.raises(RuntimeError):
        with bf16.policy("mixed_bfloat16"):
            assert mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError
    assert mixed_precision.global_policy().name == "float32"


def test_bf16_train_sides(rng, _bf16_state):
    sizes = (12, 8, 8, 3)
    x, y = mlp.train_data(sizes, 2, 4, rng)
    s = bf16.train_sides(sizes, x, y, 4, 0.5)
    assert list(s) == ["fp32", *bf16.paths(), "torch", "torch_bf16"]
    assert s["torch"] is None and s["torch_bf16"] is None
    for k, c in s.items():
        if c is not None:
            fn, steps = c
            assert steps == 2, k
            fn()
    _, _, m16 = bf16.fastdrop_trainer("mixed_bfloat16", sizes, x, y, 4, None, warmup=False)
    dense = [l for l in m16.layers if l.__class__.__name__ == "Dense"]
    assert dense and all(l.compute_dtype == "bfloat16" for l in dense)
    assert not any(l.__class__.__name__ == "Dropout" for l in m16.layers)   # rate None
    _, _, m32 = bf16.fastdrop_trainer("float32", sizes, x, y, 4, 0.5, warmup=False)
    assert all(l.compute_dtype == "float32" for l in m32.layers)
    assert any(l.__class__.__name__ == "Dropout" for l in m32.layers)


def test_bf16_mc_sides(rng, _bf16_state):
    sizes = (12, 8, 8, 3)
    x = rng.random((3, 12), dtype=np.float32)
    s = bf16.mc_sides(sizes, 0.5, x, 2)
    assert list(s) == ["fp32", *bf16.paths()]
    res = {k: fn() for k, fn in s.items()}
    for k, r in res.items():
        mean = r[0] if isinstance(r, tuple) else r
        assert np.all(np.isfinite(mean)), k


def test_bf16_torch_sides(rng, _bf16_state):
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    try:
        sizes = (12, 8, 3)
        x, y = mlp.train_data(sizes, 2, 4, rng)
        for k in ("torch", "torch_bf16"):
            fn, steps = bf16.train_side(k, sizes, x, y, 4, 0.5, torch)
            fn()
            assert steps == 2
        fn, _, tm = peers.torch_mlp_trainer(torch, sizes, x, y, 4, 0, autocast=True)
        assert not any(isinstance(mod, torch.nn.Dropout) for mod in tm)     # rate 0
    finally:
        torch.set_num_threads(old)


def _bf16_plan():
    return dict(tiny_plan(), torch=False)


def test_bf16_bench_and_report(_bf16_state):
    """The whole bf16 section on the tiny plan, its report tables and its targets; an old
    result file (no "bf16" section) still renders."""
    ctx = harness.Context(_bf16_plan())
    try:
        out = bf16.bench(ctx)
    finally:
        ctx.blas.restore()
    assert out["paths"] == list(bf16.paths()) and out["default_path"] in out["paths"]
    assert len(out["gemm"]) == 5 and all(r["agrees"] for r in out["gemm"])
    assert [r["side"] for r in out["train"]] == ["fp32", *bf16.paths()]
    assert [r["side"] for r in out["mc"]] == ["fp32", *bf16.paths()]
    assert sum(r["default_path"] for r in out["train"]) == 1
    res = dict(gemm=[], dropout=[], relu=[], softmax_cross_entropy=[], train=[])
    data = dict(machine=runner.machine_info(), settings=dict(_bf16_plan()), elapsed_s=1.0,
                results=res)
    text = report.format_report(data)
    assert "bf16 mixed precision" not in text
    res["bf16"] = out
    res["targets"] = targets.targets(res)
    text = report.format_report(data)
    assert "bf16 mixed precision" in text and "GFLOP/s" in text
    for p in out["paths"]:
        assert f"fastdrop mixed_bfloat16 {p}" in text
    assert "fastdrop float32" in text and "MC dropout" in text
    names = [t["target"] for t in res["targets"]]
    assert any("vs float32" in n and n.startswith("train") for n in names)
    assert not any("PyTorch bf16" in n for n in names)        # no torch side: no target
    assert any(n.startswith("MC dropout") for n in names)


def test_bf16_targets_met_and_missed():
    """Issue 19's goals, on the default path only, reported as met or missed."""
    def row(side, **kw):
        return dict(side=side, model="784-1024-1024-10", T=20, **kw)
    bf = dict(default_path="avx512bf16",
              train=[row("fp32", vs_fp32=1.0, vs_torch_bf16=0.9),
                     row("portable", vs_fp32=3.0, vs_torch_bf16=3.0),
                     row("avx512bf16", vs_fp32=1.7, vs_torch_bf16=1.2)],
              mc=[row("fp32", vs_fp32=1.0), row("avx512bf16", vs_fp32=1.4)])
    res = dict(gemm=[], dropout=[], relu=[], softmax_cross_entropy=[], train=[], bf16=bf)
    out = {t["target"]: t for t in targets.targets(res)}
    got = {k: (t["value"], t["goal"], t["met"]) for k, t in out.items()}
    assert got == {
        "train 784-1024-1024-10 mixed_bfloat16 (avx512bf16) vs float32": (1.7, 1.6, True),
        "train 784-1024-1024-10 mixed_bfloat16 (avx512bf16) vs PyTorch bf16 autocast":
            (1.2, 1.5, False),
        "MC dropout T=20 784-1024-1024-10 bf16 (avx512bf16) vs float32": (1.4, 1.5, False)}


def test_peer_onnxruntime_sides(rng):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = cnn.mnist_convnet()
    s = cnn.onnx_sides(model, cnn.images(2, rng), 2, 1)
    fd, ort = s["predict"]
    np.testing.assert_allclose(fd(), ort(), rtol=1e-4, atol=1e-5)
    for fn in s["mc"]:
        mean, std = fn()
        assert mean.shape == std.shape == (2, 10)


def test_peer_keras_models():
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras runs on another backend")
    for name, shape in (("mlp", (2, 784)), ("cnn", (2, 28, 28, 1))):
        km = peers.keras_model(name)
        mean, std = peers.keras_mc(km, torch.zeros(shape), 2)
        assert tuple(mean.shape) == (2, 10)


def tiny_plan():
    return dict(runner.tiny_config(), models=True, model_steps=1, mc_images=2, batch=4,
                mixed_samples=2, steady=dict(epochs=1, samples=16, sizes=(784, 8, 10)))


@pytest.mark.parametrize("section", ["gemm", "dropout", "activations", "losses", "optim",
                                     "mlp.bench_train", "mlp.bench_predict", "mlp.bench_mixed",
                                     "mlp.bench_steady", "cnn", "cnn.bench_inference", "rnn",
                                     "bf16.bench_gemm", "bf16.bench_train", "bf16.bench_mc"])
def test_family_bench_runs_tiny(section):
    """Each family's section of ``python -m fastdrop bench`` on a plan of tiny sizes."""
    mods = dict(gemm=gemm, dropout=dropout, activations=activations, losses=losses,
                optim=optim, mlp=mlp, cnn=cnn, rnn=rnn, bf16=bf16)
    mod, _, fn = section.partition(".")
    ctx = harness.Context(tiny_plan())
    try:
        out = getattr(mods[mod], fn or "bench")(ctx)
    finally:
        ctx.blas.restore()
    rows = [r for part in (out if isinstance(out, tuple) else (out,)) for r in part]
    assert rows
    for r in rows:
        nums = [v for v in r.values() if isinstance(v, float)]
        assert nums and all(math.isfinite(v) for v in nums), r


def test_families_listed():
    import fastdrop.benchmarks.cases as C
    here = os.path.dirname(C.__file__)
    found = {f[:-3] for f in os.listdir(here) if f.endswith(".py")} - {"__init__", "common"}
    assert found == set(FAMILIES)


BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(fastdrop.__file__)), "bench")


@pytest.mark.skipif(not os.path.isdir(BENCH_DIR), reason="no bench/ beside the package")
def test_bench_files_use_the_cases():
    """Every pytest-benchmark file builds its cases through fastdrop.benchmarks (no second
    copy of a benchmark there)."""
    for f in sorted(os.listdir(BENCH_DIR)):
        if not (f.startswith("bench_") and f.endswith(".py")):
            continue
        tree = ast.parse(open(os.path.join(BENCH_DIR, f), encoding="utf-8").read())
        mods = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module:
                mods.add(n.module)
                mods.update(f"{n.module}.{a.name}" for a in n.names)
            elif isinstance(n, ast.Import):
                mods.update(a.name for a in n.names)
        # the data-parallel bench is its own driver one floor up (fastdrop.distributed,
        # running jobs under mpiexec): bench_distributed.py is a front for it
        assert any(m.startswith("fastdrop.benchmarks") or m == "fastdrop.distributed.bench"
                   for m in mods), f
        assert not any(m.startswith("fastdrop._bench") for m in mods), f

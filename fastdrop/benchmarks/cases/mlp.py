"""Dropout MLPs through the public ``Sequential``: training steps (``fit`` in steady
state) beside the NumPy ``ReferenceTrainer`` and PyTorch, batch-1 ``predict`` latency,
Monte Carlo dropout against T plain predictions, calls right after a NumPy matmul, and the
training speed of later epochs on real data."""
import time

import numpy as np

from .. import peers
from ..harness import model_name, quantiles, ratio


def fastdrop_mlp(sizes, rate, seed=0):
    """``Sequential`` of Dense(relu) + Dropout(rate) per hidden size (no Dropout when
    ``rate`` is 0 or None), Dense(softmax), compiled with Adam(1e-3) and sparse categorical
    cross-entropy.  The layers take the global dtype policy (``fastdrop.mixed_precision``)
    in force when this is called."""
    from ...layers import Dense, Dropout
    from ...models import Sequential
    from ...optimizers import Adam
    model = Sequential(seed=seed)
    for i, units in enumerate(sizes[1:-1]):
        model.add(Dense(units, activation="relu", input_dim=sizes[0] if i == 0 else None))
        if rate:
            model.add(Dropout(rate))
    model.add(Dense(sizes[-1], activation="softmax"))
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return model


def fastdrop_trainer(sizes, x, y, batch, rate, seed=0, warmup=True):
    """A callable running ``len(x) // batch`` training steps of a fresh fastdrop
    ``Sequential`` (dropout ``rate`` after each hidden ReLU layer, Adam) through the public
    ``fit``; in steady state after one warm-up call (made here if ``warmup``), which
    builds parameters, optimizer state and per-batch buffers.
    Returns (callable, steps per call, model)."""
    steps = x.shape[0] // batch
    model = fastdrop_mlp(sizes, rate, seed)

    def fd():
        model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0,
                  shuffle=False)

    if warmup:
        fd()
    return fd, steps, model


def train_data(sizes, steps, batch, rng):
    """(x, y): ``steps`` batches of uniform inputs and integer labels."""
    x = rng.random((steps * batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], steps * batch).astype(np.int64)
    return x, y


def train_sides(sizes, x, y, batch, rate, torch=None, ref_steps=None):
    """{side: (callable, steps per call)} for "fastdrop", "reference" and "torch" (if
    given), all on the same batches of (x, y); not warmed up."""
    fd, steps, _ = fastdrop_trainer(sizes, x, y, batch, rate, warmup=False)
    rf, rsteps, _ = peers.reference_trainer(sizes, x, y, batch, rate, ref_steps)
    cases = {"fastdrop": (fd, steps), "reference": (rf, rsteps)}
    if torch is not None:
        tr, tsteps, _ = peers.torch_mlp_trainer(torch, sizes, x, y, batch, rate,
                                                warmup=False)
        cases["torch"] = (tr, tsteps)
    return cases


def predict_sides(sizes, rate, x, torch=None):
    """{"fastdrop", "reference", "torch"} ``predict`` of x on freshly initialised models."""
    from ...reference import ReferenceTrainer
    model = fastdrop_mlp(sizes, rate)
    model.build(sizes[0])
    ref = ReferenceTrainer(list(sizes), rate=rate, seed=0)
    cases = {"fastdrop": lambda: model.predict(x), "reference": lambda: ref.predict(x)}
    if torch is not None:
        tm, _ = peers.torch_mlp(torch, sizes, rate)
        cases["torch"] = peers.torch_predict(torch, tm, x)
    return cases


def mc_sides(model, x, T):
    """{"mc": predict(x, mc_samples=T), "predicts": T plain predict calls}."""
    def predicts():
        for _ in range(T):
            model.predict(x)
    return {"mc": lambda: model.predict(x, mc_samples=T, seed=0), "predicts": predicts}


def bench_train(ctx):
    """Training samples/s of every model of ``cfg["train_models"]`` at every thread count
    of ``cfg["train_threads"]``; returns (rows, thread scaling rows)."""
    cfg = ctx.cfg
    torch = ctx.torch()
    batch = cfg["batch"]
    rows = []
    for sizes in cfg["train_models"]:
        steps = cfg["train_steps"][sizes[1]]
        x, y = train_data(sizes, steps, batch, ctx.rng)
        for t in cfg["train_threads"]:
            ctx.threads(t)
            cases = train_sides(sizes, x, y, batch, cfg["rate"], torch,
                                ref_steps=max(1, steps // 4))
            r = ctx.measure({k: fn for k, (fn, _) in cases.items()}, scale=2.0)
            sps = {k: cases[k][1] * batch / v["best"] for k, v in r.items()}
            row = dict(model=model_name(sizes), threads=t, batch=batch,
                       steps_per_call=steps, fastdrop_sps=sps["fastdrop"],
                       reference_sps=sps["reference"], torch_sps=sps.get("torch"),
                       fastdrop_median_sps=steps * batch / r["fastdrop"]["median"],
                       numpy_blas_threads=t if ctx.blas.available else None)
            row["vs_reference"] = ratio(row["fastdrop_sps"], row["reference_sps"])
            row["vs_torch"] = ratio(row["fastdrop_sps"], row["torch_sps"])
            rows.append(row)
            ctx.log(f"train {row['model']} {t}T: {row['fastdrop_sps']:.0f} samples/s "
                    f"(ref {row['reference_sps']:.0f}, torch {row['torch_sps']})")
    ctx.threads(ctx.n)
    scaling = []
    by = {(r["model"], r["threads"]): r for r in rows}
    ts = cfg["train_threads"]
    if len(ts) > 1:
        lo, hi = ts[0], ts[-1]
        for sizes in cfg["train_models"]:
            name = model_name(sizes)
            a, b = by[(name, lo)], by[(name, hi)]
            scaling.append(dict(model=name, threads_lo=lo, threads_hi=hi,
                                fastdrop_lo_sps=a["fastdrop_sps"],
                                fastdrop_hi_sps=b["fastdrop_sps"],
                                fastdrop_scaling=b["fastdrop_sps"] / a["fastdrop_sps"],
                                reference_scaling=b["reference_sps"] / a["reference_sps"],
                                torch_scaling=ratio(b["torch_sps"], a["torch_sps"])))
    return rows, scaling


def bench_predict(ctx):
    """Batch-1 ``predict`` latency of the last model of ``cfg["train_models"]``."""
    cfg = ctx.cfg
    sizes = cfg["train_models"][-1]
    x1 = ctx.rng.random((1, sizes[0]), dtype=np.float32)
    cases = predict_sides(sizes, cfg["rate"], x1, ctx.torch())
    rows = []
    for t in sorted({ctx.n, 1}, reverse=True):
        ctx.threads(t)
        r = ctx.measure(cases, scale=0.5)
        rows.append(dict(model=model_name(sizes), batch=1, threads=t,
                         fastdrop_us=r["fastdrop"]["best"] * 1e6,
                         reference_us=r["reference"]["best"] * 1e6,
                         torch_us=r["torch"]["best"] * 1e6 if "torch" in r else None))
        ctx.log(f"predict batch 1 {t}T: {rows[-1]['fastdrop_us']:.1f} us")
    ctx.threads(ctx.n)
    return rows


def bench_mixed(ctx):
    """fastdrop calls alone and right after a NumPy (BLAS) matmul: the other pool's threads
    still spin on the cores then.  Blocks of samples alternate (alone, after-NumPy, ...)
    with a pause between blocks so that OpenBLAS's threads park before an "alone" block.
    Median and p99 per case; the ratio is median after NumPy / median alone."""
    from ... import _core
    cfg = ctx.cfg
    n = int(cfg.get("mixed_samples", 0))
    if n <= 0:
        return []
    ctx.threads(ctx.n)
    rng = ctx.rng
    a = rng.standard_normal((32, 784)).astype(np.float32)
    b = rng.standard_normal((784, 1024)).astype(np.float32)
    c = np.empty((32, 1024), np.float32)
    na = rng.standard_normal((256, 256)).astype(np.float32)
    sizes = cfg["train_models"][0]
    model = fastdrop_mlp(sizes, cfg["rate"])
    model.build(sizes[0])
    x1 = rng.random((1, sizes[0]), dtype=np.float32)
    calls = {"gemm 32x784x1024": lambda: _core.gemm(a, b, c, False, False, 1.0, 0.0),
             f"predict batch 1 {model_name(sizes)}": lambda: model.predict(x1)}
    rows = []
    for name, f in calls.items():
        for _ in range(10):
            f()
        alone, mixed = [], []
        blocks = 4
        per = max(1, n // blocks)
        for _ in range(blocks):
            time.sleep(0.15)  # OpenBLAS threads park (they spin ~0.1 s after a call)
            for _ in range(per):
                t0 = time.perf_counter()
                f()
                alone.append(time.perf_counter() - t0)
            for _ in range(per):
                na @ na
                t0 = time.perf_counter()
                f()
                mixed.append(time.perf_counter() - t0)
        am, ap = quantiles(alone)
        mm, mp = quantiles(mixed)
        row = dict(case=name, threads=ctx.n, samples=len(alone), alone_median_us=am * 1e6,
                   alone_p99_us=ap * 1e6, mixed_median_us=mm * 1e6, mixed_p99_us=mp * 1e6,
                   ratio_median=mm / am, ratio_p99=mp / ap)
        rows.append(row)
        ctx.log(f"mixed {name}: alone {am * 1e6:.0f} us, after numpy {mm * 1e6:.0f} us "
                f"(median, {mm / am:.2f}x; p99 {ap * 1e6:.0f} / {mp * 1e6:.0f} us)")
    return rows


def steady_data(samples, rng):
    """Fashion-MNIST (full if found locally, never downloaded; else the embedded subset)."""
    from ... import datasets
    src = "full"
    try:
        (x, y), _ = datasets.fashion_mnist(flatten=True, download=False)
    except Exception:
        (x, y), _ = datasets.fashion_mnist(subset="small", flatten=True)
        src = "small"
    if samples:
        idx = rng.permutation(len(x))[:samples]
        x, y = x[idx], y[idx]
    return x.astype(np.float32) / np.float32(255.0), y.astype(np.int64), src


def bench_steady(ctx):
    """Training speed in later epochs against epoch 1 on real data (a fresh model is not
    what users run: e.g. Adam's moments of weights fed by always-zero pixels decay into
    subnormals).  784-1024-1024-10, dropout, Adam, one fit() call per epoch."""
    cfg = ctx.cfg
    st = cfg.get("steady")
    if not st:
        return []
    ctx.threads(ctx.n)
    x, y, src = steady_data(st.get("samples"), ctx.rng)
    sizes = tuple(st.get("sizes", (784, 1024, 1024, 10)))
    model = fastdrop_mlp(sizes, cfg["rate"])
    sps = []
    for e in range(int(st["epochs"])):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0)
        sps.append(len(x) / (time.perf_counter() - t0))
        ctx.log(f"steady {model_name(sizes)} epoch {e + 1}: {sps[-1]:,.0f} samples/s")
    return [dict(model=model_name(sizes), data=src, samples=len(x), threads=ctx.n,
                 epochs=len(sps), epoch_sps=sps, first_sps=sps[0], last_sps=sps[-1],
                 ratio=sps[-1] / sps[0])]

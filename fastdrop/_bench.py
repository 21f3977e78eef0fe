"""``python -m fastdrop bench``: a quick report of fastdrop's kernels and training step
beside their baselines, measured in one process, on the same inputs, with explicit
thread counts on both sides.

Every figure is the best of several interleaved samples (the median is kept in the JSON
file); the ratios compare figures measured moments apart in this run, which is what
matters on a shared, noisy machine (absolute figures drift).

* fastdrop kernels are timed through ``fastdrop._core`` with preallocated outputs, exactly
  as the training engine calls them; baselines through their usual API
  (``numpy.matmul(..., out=)``, ``fastdrop.reference``, ``np.copyto`` as memcpy,
  ``torch.nn.functional.dropout`` when torch is importable — never a dependency).
* Training throughput is the public ``Sequential.fit`` in steady state (buffers built by
  a warm-up call; each timed call runs ``steps`` steps of batch 128 on the same data the
  NumPy ``ReferenceTrainer`` and PyTorch see).
* NumPy's BLAS: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` pin OpenBLAS to a kernel that
  may not be its best; when set, the whole report is re-executed in a subprocess without
  them (fastdrop ignores them), and the header says so.
* "Beside NumPy": a GEMM and a one-sample predict alone and right after a NumPy matmul
  (median and p99); "steady state": samples/s per epoch of a model trained for several
  epochs on Fashion-MNIST (the full set if found locally, else the embedded subset).
* One progress line per case goes to stderr while it measures (FASTDROP_BENCH_QUIET=1
  silences them); PNG plots are written only when --plots is given.  Targets are ratios.

``main(args)`` takes the ``bench`` sub-command's arguments (json, plots, threads, quick).
``run(config)`` returns the figures as a dict; ``format_report`` renders the table.
"""
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

_OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_CHILD_ENV = "FASTDROP_BENCH_REEXEC"          # JSON of the removed variables, in the child
_RATE = 0.5
_SEED = 1234
_MB = 1 << 20

# ------------------------------------------------------------------------ configs


def config(quick=False, threads=0, torch=True):
    """The measurement plan.  ``threads``: 0 = all cores."""
    n = int(threads) or _cpu_count()
    common = dict(threads=n, torch=torch, quick=quick, rate=_RATE, batch=128)
    if quick:
        return dict(common,
                    gemm_square=[512, 1024, 2048],
                    gemm_mlp=True,
                    elem_sizes=[1 << 20, 32 << 20],
                    slow_baseline_max=1 << 20,      # ref/torch dropout only up to 4 MB
                    xent=[(128, 10), (1024, 10), (128, 1000), (1024, 1000)],
                    adam_sizes=[],
                    train_models=[(784, 1024, 1024, 10), (784, 256, 256, 10)],
                    train_threads=sorted({1, n}),
                    train_steps={1024: 6, 256: 12},
                    predict=True,
                    mixed_samples=100, steady=dict(epochs=3, samples=12800),
                    budget=0.25, sample_s=0.001, min_samples=2, min_slow=1)
    return dict(common,
                gemm_square=[256, 512, 1024, 2048],
                gemm_mlp=True,
                elem_sizes=[1 << 16, 1 << 20, 4 << 20, 32 << 20],
                slow_baseline_max=32 << 20,
                xent=[(128, 10), (1024, 10), (128, 100), (1024, 100), (128, 1000),
                      (1024, 1000)],
                adam_sizes=[269_322, 1_863_690],
                train_models=[(784, 1024, 1024, 10), (784, 256, 256, 10)],
                train_threads=sorted({1, n}),
                train_steps={1024: 16, 256: 32},
                predict=True,
                mixed_samples=300, steady=dict(epochs=5, samples=None),
                budget=0.8, sample_s=0.001, min_samples=3)


def tiny_config():
    """Seconds-long plan with tiny sizes and no torch (the smoke test's)."""
    return dict(threads=min(2, _cpu_count()), torch=False, quick=True, rate=_RATE, batch=32,
                gemm_square=[64], gemm_mlp=False, elem_sizes=[1 << 12],
                slow_baseline_max=1 << 12, xent=[(32, 10)], adam_sizes=[1000],
                train_models=[(20, 16, 16, 4)], train_threads=sorted({1, min(2, _cpu_count())}),
                train_steps={16: 2}, predict=True,
                mixed_samples=5, steady=dict(epochs=2, samples=256, sizes=(784, 16, 10)),
                models=False,
                budget=0.005, sample_s=0.001, min_samples=1)


# ------------------------------------------------------------------------- timing


class Case:
    """One timed callable; ``setup`` runs before each block of samples (thread counts)."""

    def __init__(self, fn, setup=None):
        self.fn = fn
        self.setup = setup


def _run(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def measure(cases, budget=0.5, sample_s=0.001, min_samples=3, max_samples=2000, slow_s=0.25,
            block=3, min_slow=2):
    """Time several callables interleaved in blocks (A A A, B B B, C C C, A A A, ...) so
    that drifting machine load hits them alike, while each block gives the other side's
    idle threads (OpenBLAS spins ~0.1 s after a call) time to park.  Samples are short
    (``sample_s``) and many: the best of them is what the code does when the machine
    leaves it alone (with other processes on the cores, a parallel region waits for a
    scheduler tick whenever one of its threads is preempted: only short samples see the
    quiet windows between).  Calls slower than ``slow_s`` need only ``min_slow`` samples
    (the warm-up call counts).  ``cases``: {name: Case or callable or None (skipped)}.
    Returns {name: {"best": s, "median": s, "samples": k}} in seconds per call."""
    cases = {k: (c if isinstance(c, Case) else Case(c)) for k, c in cases.items()
             if c is not None}
    inner, est, samples = {}, {}, {k: [] for k in cases}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k, c in cases.items():          # warm up, calibrate calls per sample
            if c.setup:
                c.setup()
            t = _run(c.fn, 1)
            if t >= slow_s:                 # slow baseline: this call is a sample
                samples[k].append(t)
                inner[k], est[k] = 1, t
                continue
            t = _run(c.fn, 1)
            n = 1
            if t >= 0.5 * sample_s:         # a steady-state call long enough: a sample
                samples[k].append(t)
            while t < 0.5 * sample_s and n < (1 << 22):
                n = min(n * 16, max(n + 1, int(n * sample_s / max(t, 1e-7))))
                t = _run(c.fn, n)
            inner[k], est[k] = n, t / n
        # blocks of short samples; long calls (> 30 ms a sample) one at a time
        nblock = {k: block if est[k] * inner[k] < 0.03 else 1 for k in cases}
        t_start = time.perf_counter()
        while True:
            spent = time.perf_counter() - t_start
            todo = [k for k in cases if len(samples[k]) < max_samples and
                    (spent < budget or len(samples[k]) <
                     (min_slow if est[k] >= slow_s else min_samples))]
            if not todo:
                break
            for k in todo:
                c = cases[k]
                if c.setup:
                    c.setup()
                for _ in range(nblock[k]):
                    samples[k].append(_run(c.fn, inner[k]) / inner[k])
    finally:
        if was_enabled:
            gc.enable()
    return {k: {"best": min(v), "median": float(np.median(v)), "samples": len(v)}
            for k, v in samples.items()}


# ------------------------------------------------------------------------ helpers


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Blas:
    """NumPy's BLAS thread count through threadpoolctl (when installed)."""

    def __init__(self):
        try:
            import threadpoolctl
            self.ctl = threadpoolctl.ThreadpoolController()
            self.info = [i for i in self.ctl.info() if i.get("user_api") == "blas"]
        except Exception:           # not installed or cannot inspect
            self.ctl, self.info = None, []

    @property
    def available(self):
        return self.ctl is not None and bool(self.info)

    def set(self, n):
        if self.available:
            self.ctl.limit(limits=n, user_api="blas")

    def restore(self):
        """Back to the thread counts found at construction."""
        if self.available:
            for i in self.info:
                self.ctl.limit(limits=i["num_threads"], user_api="blas")

    def describe(self):
        if not self.available:
            return "BLAS threads not controlled (pip install threadpoolctl)"
        i = self.info[0]
        return (f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernel, "
                f"{i.get('threading_layer')})")


_TORCH = []


def _torch(cfg):
    """torch if wanted and importable, else None (imported once, late: it brings its own
    OpenMP runtime)."""
    if not cfg.get("torch"):
        return None
    if not _TORCH:
        try:
            import torch
            _TORCH.append(torch)
        except Exception:
            _TORCH.append(None)
    return _TORCH[0]


def _elem_label(n):
    b = 4 * n
    size = f"{b // _MB} MB" if b >= _MB else f"{b // 1024} KB"
    return f"{n // _MB}M" if n >= _MB else f"{n // 1024}K", size


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# -------------------------------------------------------------------- measurements


class _Ctx:
    def __init__(self, cfg, log):
        from . import runtime as fastdrop_runtime
        self.fastdrop = fastdrop_runtime
        self.cfg = cfg
        self.n = cfg["threads"]
        self.blas = _Blas()
        self.log = log
        self.rng = np.random.default_rng(0)

    def threads(self, n):
        """Set every side's thread count to n."""
        self.fastdrop.set_num_threads(n)
        self.blas.set(n)
        torch = _TORCH[0] if _TORCH else None
        if torch is not None:
            torch.set_num_threads(n)

    def fd_threads(self, n):
        return lambda: self.fastdrop.set_num_threads(n)

    def blas_threads(self, n):
        return lambda: self.blas.set(n)

    def measure(self, cases, scale=1.0):
        c = self.cfg
        return measure(cases, budget=c["budget"] * scale, sample_s=c["sample_s"],
                       min_samples=c["min_samples"], min_slow=c.get("min_slow", 2))


def bench_gemm(ctx):
    from . import _core
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    rng = ctx.rng
    shapes = [("square", s, s, s, False, False) for s in cfg["gemm_square"]]
    if cfg["gemm_mlp"]:
        b = 128
        shapes += [("fwd x·W", b, 1024, 784, False, False),
                   ("dW xᵀ·dz", 784, 1024, b, True, False),
                   ("dX dz·Wᵀ", b, 784, 1024, False, True),
                   ("out h·W", b, 10, 1024, False, False),
                   ("predict x·W", 1, 256, 784, False, False)]
    rows = []
    for name, m, n, k, ta, tb in shapes:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        bm = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        c1 = np.empty((m, n), np.float32)
        c2 = np.empty((m, n), np.float32)
        na = a.T if ta else a
        nb = bm.T if tb else bm
        fd = lambda: _core.gemm(a, bm, c1, ta, tb, 1.0, 0.0)  # noqa: E731
        npy = lambda: np.matmul(na, nb, out=c2)  # noqa: E731
        cases = {"fastdrop": Case(fd, ctx.fd_threads(ctx.n)),
                 "numpy": Case(npy, ctx.blas_threads(ctx.n))}
        if ctx.n > 1:
            cases["fastdrop_1t"] = Case(fd, ctx.fd_threads(1))
            cases["numpy_1t"] = Case(npy, ctx.blas_threads(1))
        r = ctx.measure(cases, scale=1.5)
        flop = 2.0 * m * n * k
        g = {key: flop / v["best"] / 1e9 for key, v in r.items()}
        row = dict(op=name, m=m, n=n, k=k, trans_a=ta, trans_b=tb, threads=ctx.n,
                   fastdrop_gflops=g["fastdrop"], numpy_gflops=g["numpy"],
                   ratio=g["fastdrop"] / g["numpy"],
                   fastdrop_1t_gflops=g.get("fastdrop_1t"), numpy_1t_gflops=g.get("numpy_1t"),
                   ratio_1t=_ratio(g.get("fastdrop_1t"), g.get("numpy_1t")),
                   fastdrop_median_s=r["fastdrop"]["median"],
                   numpy_median_s=r["numpy"]["median"])
        # a fast wrong kernel is no result: compare with NumPy's product
        err = float(np.max(np.abs(c1 - c2)) / max(float(np.max(np.abs(c2))), 1e-30))
        row["max_rel_diff"] = err
        row["agrees"] = bool(err < 1e-4)
        rows.append(row)
        ctx.log(f"gemm {name} {m}x{n}x{k}: {row['fastdrop_gflops']:.1f} vs "
                f"{row['numpy_gflops']:.1f} GFLOP/s")
    ctx.threads(ctx.n)
    return rows


def _torch_dropout_cases(torch, x, rate):
    if torch is None:
        return None, None
    xt = torch.from_numpy(x)
    F = torch.nn.functional
    _, mask = torch.native_dropout(xt, rate, True)
    scale = 1.0 / (1.0 - rate)
    fwd = lambda: F.dropout(xt, rate, True)  # noqa: E731
    bwd = lambda: torch.ops.aten.native_dropout_backward(xt, mask, scale)  # noqa: E731
    return fwd, bwd


def bench_elementwise(ctx):
    """Dropout forward/backward, relu, relu_backward: GB/s beside memcpy and NumPy."""
    from . import _core
    from . import reference as R
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    rate = cfg["rate"]
    scale = float(np.float32(1.0 / (1.0 - rate)))
    torch = _torch(cfg)
    if torch is not None:
        torch.set_num_threads(ctx.n)
    out = {"dropout": [], "relu": []}
    fd_n, fd_1 = ctx.fd_threads(ctx.n), ctx.fd_threads(1)
    for size in cfg["elem_sizes"]:
        label, mem = _elem_label(size)
        x = ctx.rng.standard_normal(size, dtype=np.float32)
        y = np.empty_like(x)
        y[...] = 0
        g = ctx.rng.standard_normal(size, dtype=np.float32)
        mask = np.empty((size + 7) // 8, np.uint8)
        _core.dropout_forward(x, y, _SEED, rate, mask)
        slow_ok = size <= cfg["slow_baseline_max"]
        t_fwd, t_bwd = _torch_dropout_cases(torch, x, rate) if slow_ok else (None, None)
        memcpy = lambda: np.copyto(y, x)  # noqa: E731
        nbytes = 8 * size + (size + 7) // 8
        for direction in ("forward", "backward"):
            if direction == "forward":
                fd = lambda: _core.dropout_forward(x, y, _SEED, rate, mask)  # noqa: E731
                ref = (lambda: R.dropout(x, rate, _SEED)) if slow_ok else None
                tt = t_fwd
            else:
                fd = lambda: _core.dropout_apply(x, mask, y, scale)  # noqa: E731
                ref = (lambda: R.dropout_backward(x, mask, rate)) if slow_ok else None
                tt = t_bwd
            r = ctx.measure({"fastdrop": Case(fd, fd_n), "fastdrop_1t": Case(fd, fd_1),
                             "memcpy": memcpy, "reference": ref, "torch": tt})
            gbs = {k: nbytes / v["best"] / 1e9 for k, v in r.items()}
            gbs["memcpy"] = 8 * size / r["memcpy"]["best"] / 1e9
            row = dict(kernel=f"dropout_{direction}", elements=size, label=label, mem=mem,
                       bytes=nbytes, threads=ctx.n,
                       fastdrop_gbs=gbs["fastdrop"], fastdrop_1t_gbs=gbs["fastdrop_1t"],
                       memcpy_gbs=gbs["memcpy"], reference_gbs=gbs.get("reference"),
                       torch_gbs=gbs.get("torch"))
            row["vs_memcpy"] = _ratio(row["fastdrop_gbs"], row["memcpy_gbs"])
            row["vs_reference"] = _ratio(row["fastdrop_gbs"], row["reference_gbs"])
            row["vs_torch"] = _ratio(row["fastdrop_gbs"], row["torch_gbs"])
            out["dropout"].append(row)
            ctx.log(f"dropout {direction} {label}: {row['fastdrop_gbs']:.1f} GB/s, "
                    f"memcpy {row['memcpy_gbs']:.1f}")
        for kernel in ("relu", "relu_backward"):
            if kernel == "relu":
                fd = lambda: _core.relu(x, y)  # noqa: E731
                npy = lambda: np.maximum(x, np.float32(0), out=y)  # noqa: E731
                nb = 8 * size
            else:
                fd = lambda: _core.relu_backward(g, x, y)  # noqa: E731
                zero = np.float32(0)
                npy = lambda: np.multiply(g, x > zero, out=y)  # noqa: E731
                nb = 12 * size
            r = ctx.measure({"fastdrop": Case(fd, fd_n), "fastdrop_1t": Case(fd, fd_1),
                             "memcpy": memcpy, "numpy": npy})
            row = dict(kernel=kernel, elements=size, label=label, mem=mem, bytes=nb,
                       threads=ctx.n,
                       fastdrop_gbs=nb / r["fastdrop"]["best"] / 1e9,
                       fastdrop_1t_gbs=nb / r["fastdrop_1t"]["best"] / 1e9,
                       numpy_gbs=nb / r["numpy"]["best"] / 1e9,
                       memcpy_gbs=8 * size / r["memcpy"]["best"] / 1e9)
            row["vs_memcpy"] = row["fastdrop_gbs"] / row["memcpy_gbs"]
            row["vs_numpy"] = row["fastdrop_gbs"] / row["numpy_gbs"]
            out["relu"].append(row)
            ctx.log(f"{kernel} {label}: {row['fastdrop_gbs']:.1f} GB/s")
    return out


def bench_xent(ctx):
    from . import _core
    from . import reference as R
    ctx.threads(ctx.n)
    rows = []
    for batch, classes in ctx.cfg["xent"]:
        logits = (3 * ctx.rng.standard_normal((batch, classes))).astype(np.float32)
        labels = ctx.rng.integers(0, classes, batch).astype(np.int64)
        grad = np.empty_like(logits)
        fn = lambda: _core.softmax_xent_labels(logits, labels, 1.0 / batch, grad)  # noqa
        r = ctx.measure({
            "fastdrop": Case(fn, ctx.fd_threads(ctx.n)),
            "fastdrop_1t": Case(fn, ctx.fd_threads(1)) if ctx.n > 1 else None,
            "reference": lambda: R.softmax_cross_entropy(logits, labels)}, scale=0.5)
        fd, ref = r["fastdrop"]["best"], r["reference"]["best"]
        fd1 = r["fastdrop_1t"]["best"] if "fastdrop_1t" in r else None
        rows.append(dict(batch=batch, classes=classes, threads=ctx.n, fastdrop_us=fd * 1e6,
                         fastdrop_1t_us=fd1 * 1e6 if fd1 else None,
                         reference_us=ref * 1e6, ratio=ref / fd,
                         ratio_1t=ref / fd1 if fd1 else None,
                         fastdrop_gbs=4 * batch * classes * 2 / fd / 1e9))
        ctx.log(f"softmax_xent {batch}x{classes}: {ref / fd:.1f}x")
    return rows


def bench_adam(ctx):
    from . import _core
    from . import reference as R
    ctx.threads(ctx.n)
    rows = []
    for n in ctx.cfg["adam_sizes"]:
        w = ctx.rng.standard_normal(n, dtype=np.float32)
        g = ctx.rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
        m = np.zeros(n, np.float32)
        v = np.zeros(n, np.float32)
        fn = lambda: _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 10)  # noqa
        r = ctx.measure({
            "fastdrop": Case(fn, ctx.fd_threads(ctx.n)),
            "fastdrop_1t": Case(fn, ctx.fd_threads(1)) if ctx.n > 1 else None,
            "reference": lambda: R.adam_update(w, g, m, v, 1e-3, 10)}, scale=0.5)
        nb = 28 * n     # w, g, m, v read; w, m, v written
        fd, ref = r["fastdrop"]["best"], r["reference"]["best"]
        fd1 = r["fastdrop_1t"]["best"] if "fastdrop_1t" in r else None
        rows.append(dict(params=n, threads=ctx.n, fastdrop_gbs=nb / fd / 1e9,
                         fastdrop_1t_gbs=nb / fd1 / 1e9 if fd1 else None,
                         reference_gbs=nb / ref / 1e9, ratio=ref / fd,
                         ratio_1t=ref / fd1 if fd1 else None))
        ctx.log(f"adam {n}: {ref / fd:.1f}x")
    return rows


def _model_name(sizes):
    return "-".join(map(str, sizes))


def _fastdrop_model(sizes, rate, seed=0):
    from .layers import Dense, Dropout
    from .models import Sequential
    from .optimizers import Adam
    model = Sequential(seed=seed)
    for i, units in enumerate(sizes[1:-1]):
        model.add(Dense(units, activation="relu", input_dim=sizes[0] if i == 0 else None))
        model.add(Dropout(rate))
    model.add(Dense(sizes[-1], activation="softmax"))
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return model


def _torch_model(torch, sizes, rate, seed=0):
    nn = torch.nn
    torch.manual_seed(seed)
    layers = []
    for fi, fo in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(fi, fo), nn.ReLU(), nn.Dropout(rate)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    return model, opt


def fastdrop_trainer(sizes, x, y, batch, rate, seed=0, warmup=True):
    """A callable running ``len(x) // batch`` training steps of a fresh fastdrop
    ``Sequential`` (dropout ``rate`` after each hidden ReLU layer, Adam) through the public
    ``fit``; in steady state after one warm-up call (made here if ``warmup``), which
    builds parameters, optimizer state and per-batch buffers.
    Returns (callable, steps per call, model)."""
    steps = x.shape[0] // batch
    model = _fastdrop_model(sizes, rate, seed)

    def fd():
        model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0,
                  shuffle=False)

    if warmup:
        fd()
    return fd, steps, model


def reference_trainer(sizes, x, y, batch, rate, steps=None, seed=0):
    """``fastdrop.reference.ReferenceTrainer`` on the first ``steps`` batches of (x, y).
    Returns (callable, steps per call, trainer)."""
    from .reference import ReferenceTrainer
    steps = min(x.shape[0] // batch, steps or x.shape[0] // batch)
    ref = ReferenceTrainer(list(sizes), rate=rate, learning_rate=1e-3, seed=seed)

    def rf():
        for lo in range(0, steps * batch, batch):
            ref.train_step(x[lo:lo + batch], y[lo:lo + batch])

    return rf, steps, ref


def torch_trainer(torch, sizes, x, y, batch, rate, seed=0, warmup=True):
    """The same MLP in PyTorch (nn.Sequential of Linear/ReLU/Dropout, cross-entropy, Adam
    with eps=1e-7); one warm-up call made if ``warmup``.
    Returns (callable, steps per call, module)."""
    steps = x.shape[0] // batch
    tm, opt = _torch_model(torch, sizes, rate, seed)
    tm.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    F = torch.nn.functional

    def tr():
        for lo in range(0, steps * batch, batch):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tm(xt[lo:lo + batch]), yt[lo:lo + batch])
            loss.backward()
            opt.step()

    if warmup:
        tr()
    return tr, steps, tm


def train_cases(sizes, x, y, batch, rate, torch=None, ref_steps=None):
    """{name: (callable, steps per call)} for fastdrop, the reference and torch (if
    given), all on the same batches of (x, y); not warmed up (``measure`` does that)."""
    fd, steps, _ = fastdrop_trainer(sizes, x, y, batch, rate, warmup=False)
    rf, rsteps, _ = reference_trainer(sizes, x, y, batch, rate, ref_steps)
    cases = {"fastdrop": (fd, steps), "reference": (rf, rsteps)}
    if torch is not None:
        tr, tsteps, _ = torch_trainer(torch, sizes, x, y, batch, rate, warmup=False)
        cases["torch"] = (tr, tsteps)
    return cases


def bench_train(ctx):
    cfg = ctx.cfg
    torch = _torch(cfg)
    batch = cfg["batch"]
    rows = []
    for sizes in cfg["train_models"]:
        steps = cfg["train_steps"][sizes[1]]
        x = ctx.rng.random((steps * batch, sizes[0]), dtype=np.float32)
        y = ctx.rng.integers(0, sizes[-1], steps * batch).astype(np.int64)
        for t in cfg["train_threads"]:
            ctx.threads(t)
            cases = train_cases(sizes, x, y, batch, cfg["rate"], torch,
                                ref_steps=max(1, steps // 4))
            r = ctx.measure({k: fn for k, (fn, _) in cases.items()}, scale=2.0)
            sps = {k: cases[k][1] * batch / v["best"] for k, v in r.items()}
            row = dict(model=_model_name(sizes), threads=t, batch=batch,
                       steps_per_call=steps, fastdrop_sps=sps["fastdrop"],
                       reference_sps=sps["reference"], torch_sps=sps.get("torch"),
                       fastdrop_median_sps=steps * batch / r["fastdrop"]["median"],
                       numpy_blas_threads=t if ctx.blas.available else None)
            row["vs_reference"] = _ratio(row["fastdrop_sps"], row["reference_sps"])
            row["vs_torch"] = _ratio(row["fastdrop_sps"], row["torch_sps"])
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
            name = _model_name(sizes)
            a, b = by[(name, lo)], by[(name, hi)]
            scaling.append(dict(model=name, threads_lo=lo, threads_hi=hi,
                                fastdrop_lo_sps=a["fastdrop_sps"],
                                fastdrop_hi_sps=b["fastdrop_sps"],
                                fastdrop_scaling=b["fastdrop_sps"] / a["fastdrop_sps"],
                                reference_scaling=b["reference_sps"] / a["reference_sps"],
                                torch_scaling=_ratio(b["torch_sps"], a["torch_sps"])))
    return rows, scaling


def bench_predict(ctx):
    from .reference import ReferenceTrainer
    cfg = ctx.cfg
    torch = _torch(cfg)
    sizes = cfg["train_models"][-1]
    model = _fastdrop_model(sizes, cfg["rate"])
    model.build(sizes[0])
    ref = ReferenceTrainer(list(sizes), rate=cfg["rate"], seed=0)
    x1 = ctx.rng.random((1, sizes[0]), dtype=np.float32)
    cases = {"fastdrop": lambda: model.predict(x1), "reference": lambda: ref.predict(x1)}
    if torch is not None:
        tm, _ = _torch_model(torch, sizes, cfg["rate"])
        tm.eval()
        xt = torch.from_numpy(x1)
        sm = torch.nn.functional.softmax

        def tp():
            with torch.inference_mode():
                return sm(tm(xt), dim=1)

        cases["torch"] = tp
    rows = []
    for t in sorted({ctx.n, 1}, reverse=True):
        ctx.threads(t)
        r = ctx.measure(cases, scale=0.5)
        rows.append(dict(model=_model_name(sizes), batch=1, threads=t,
                         fastdrop_us=r["fastdrop"]["best"] * 1e6,
                         reference_us=r["reference"]["best"] * 1e6,
                         torch_us=r["torch"]["best"] * 1e6 if "torch" in r else None))
        ctx.log(f"predict batch 1 {t}T: {rows[-1]['fastdrop_us']:.1f} us")
    ctx.threads(ctx.n)
    return rows


def _quantiles(ts):
    ts = np.sort(np.asarray(ts, np.float64))
    return float(np.median(ts)), float(ts[min(len(ts) - 1, int(np.ceil(0.99 * len(ts))) - 1)])


def bench_mixed(ctx):
    """fastdrop calls alone and right after a NumPy (BLAS) matmul: the other pool's threads
    still spin on the cores then.  Blocks of samples alternate (alone, after-NumPy, ...)
    with a pause between blocks so that OpenBLAS's threads park before an "alone" block.
    Median and p99 per case; the ratio is median after NumPy / median alone."""
    from . import _core
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
    model = _fastdrop_model(sizes, cfg["rate"])
    model.build(sizes[0])
    x1 = rng.random((1, sizes[0]), dtype=np.float32)
    calls = {"gemm 32x784x1024": lambda: _core.gemm(a, b, c, False, False, 1.0, 0.0),
             f"predict batch 1 {_model_name(sizes)}": lambda: model.predict(x1)}
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
        am, ap = _quantiles(alone)
        mm, mp = _quantiles(mixed)
        row = dict(case=name, threads=ctx.n, samples=len(alone), alone_median_us=am * 1e6,
                   alone_p99_us=ap * 1e6, mixed_median_us=mm * 1e6, mixed_p99_us=mp * 1e6,
                   ratio_median=mm / am, ratio_p99=mp / ap)
        rows.append(row)
        ctx.log(f"mixed {name}: alone {am * 1e6:.0f} us, after numpy {mm * 1e6:.0f} us "
                f"(median, {mm / am:.2f}x; p99 {ap * 1e6:.0f} / {mp * 1e6:.0f} us)")
    return rows


def _steady_data(samples, rng):
    """Fashion-MNIST (full if found locally, never downloaded; else the embedded subset)."""
    from . import datasets
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
    x, y, src = _steady_data(st.get("samples"), ctx.rng)
    sizes = tuple(st.get("sizes", (784, 1024, 1024, 10)))
    model = _fastdrop_model(sizes, cfg["rate"])
    sps = []
    for e in range(int(st["epochs"])):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=cfg["batch"], epochs=1, verbose=0)
        sps.append(len(x) / (time.perf_counter() - t0))
        ctx.log(f"steady {_model_name(sizes)} epoch {e + 1}: {sps[-1]:,.0f} samples/s")
    return [dict(model=_model_name(sizes), data=src, samples=len(x), threads=ctx.n,
                 epochs=len(sps), epoch_sps=sps, first_sps=sps[0], last_sps=sps[-1],
                 ratio=sps[-1] / sps[0])]


# ------------------------------------------------------------------------ machine


def machine_info(blas=None):
    from . import runtime as fastdrop_runtime
    info = dict(cpu=_cpu_model(), cores=_cpu_count(), logical_cpus=os.cpu_count(),
                fastdrop=fastdrop_runtime.cpu_info(), python=platform.python_version(),
                platform=platform.platform(), numpy=np.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    blas = blas or _Blas()
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        info["loadavg"] = None
    info["blas"] = blas.info or None
    info["threadpoolctl"] = blas.available
    info["openblas_env"] = {k: os.environ.get(k) for k in _OPENBLAS_ENV}
    removed = os.environ.get(_CHILD_ENV)
    info["openblas_env_removed"] = json.loads(removed) if removed else None
    if _TORCH and _TORCH[0] is not None:
        info["torch"] = _TORCH[0].__version__
    try:
        import matplotlib
        info["matplotlib"] = matplotlib.__version__
    except Exception:
        pass
    try:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        rev = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            info["git"] = rev.stdout.strip()
    except Exception:
        pass
    return info


# ------------------------------------------------------------------------- report


def run(cfg, log=None):
    """Measure everything in ``cfg`` (see ``config``); returns the results dict."""
    from . import runtime as fastdrop_runtime
    log = log or (lambda s: None)
    old_threads = fastdrop_runtime.get_num_threads()
    old_torch = _TORCH[0].get_num_threads() if _TORCH and _TORCH[0] is not None else None
    t0 = time.perf_counter()
    ctx = _Ctx(cfg, log)
    res = {}
    try:
        load_start = os.getloadavg()[0]
    except (AttributeError, OSError):
        load_start = None
    try:
        res["gemm"] = bench_gemm(ctx)
        ew = bench_elementwise(ctx)
        res["dropout"] = ew["dropout"]
        res["relu"] = ew["relu"]
        res["softmax_cross_entropy"] = bench_xent(ctx)
        res["adam"] = bench_adam(ctx)
        res["train"], res["thread_scaling"] = bench_train(ctx)
        res["predict"] = bench_predict(ctx) if cfg.get("predict") else []
        res["mixed"] = bench_mixed(ctx)
        res["steady"] = bench_steady(ctx)
        if cfg.get("models", True):
            from .benchmarks.models import bench_models
            res["models"] = bench_models(ctx, _torch(cfg))
    finally:
        fastdrop_runtime.set_num_threads(old_threads)
        ctx.blas.restore()
        if _TORCH and _TORCH[0] is not None and old_torch:
            _TORCH[0].set_num_threads(old_torch)
    res["targets"] = targets(res)
    settings = {k: v for k, v in cfg.items()}
    settings["torch"] = bool(_TORCH and _TORCH[0] is not None) if cfg.get("torch") else False
    machine = machine_info(ctx.blas)
    machine["loadavg_start"] = load_start
    return dict(schema=1, machine=machine, settings=settings, results=res,
                elapsed_s=time.perf_counter() - t0)


def _min(vals):
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def targets(res):
    """The project's performance targets (ratios) against this run's figures, each at all threads
    and, where measured, at 1 thread (``value_1t``: the robust figure on a busy machine)."""
    out = []

    def add(what, value, value_1t=None, *, goal, unit="×", lower_is_better=False):
        if value is None:
            return
        ok = value <= goal if lower_is_better else value >= goal
        out.append(dict(target=what, value=value, value_1t=value_1t, goal=goal, unit=unit,
                        met=bool(ok), lower_is_better=lower_is_better))

    def worst(rows, key, key_1t=None):
        """(min of key, min of key_1t) over rows."""
        return (_min([r.get(key) for r in rows]),
                _min([r.get(key_1t) for r in rows]) if key_1t else None)

    gemm = res["gemm"]
    add("gemm square 1024-2048 vs numpy (min)",
        *worst([r for r in gemm if r["op"] == "square" and r["m"] >= 1024], "ratio",
               "ratio_1t"), goal=0.95)
    add("gemm MLP shapes vs numpy (min)",
        *worst([r for r in gemm if r["op"] != "square" and r["n"] != 10 and r["m"] >= 32],
               "ratio", "ratio_1t"), goal=1.0)
    add("gemm N=10 output layer vs numpy",
        *worst([r for r in gemm if r["op"] != "square" and r["n"] == 10], "ratio",
               "ratio_1t"), goal=1.5)
    for d in ("forward", "backward"):
        rows = [dict(r, vs_memcpy_1t=_ratio(r["fastdrop_1t_gbs"], r["memcpy_gbs"]),
                     vs_reference_1t=_ratio(r["fastdrop_1t_gbs"], r["reference_gbs"]))
                for r in res["dropout"] if r["kernel"] == f"dropout_{d}"]
        if not rows:
            continue
        big = max(r["elements"] for r in rows)
        bigrow = [r for r in rows if r["elements"] == big]
        add(f"dropout {d} {bigrow[0]['mem']} vs memcpy",
            *worst(bigrow, "vs_memcpy", "vs_memcpy_1t"), goal=0.8)
        withref = [r for r in rows if r["vs_reference"] is not None]
        if withref:
            big_ref = max(r["elements"] for r in withref)
            rr = [r for r in withref if r["elements"] == big_ref]
            add(f"dropout {d} {rr[0]['mem']} vs NumPy reference",
                *worst(rr, "vs_reference", "vs_reference_1t"), goal=20.0)
    for k in ("relu", "relu_backward"):
        rows = [dict(r, vs_memcpy_1t=r["fastdrop_1t_gbs"] / r["memcpy_gbs"])
                for r in res["relu"] if r["kernel"] == k]
        add(f"{k} vs memcpy (min over sizes)", *worst(rows, "vs_memcpy", "vs_memcpy_1t"),
            goal=0.8)
    add("softmax_cross_entropy vs reference (min)",
        *worst(res["softmax_cross_entropy"], "ratio", "ratio_1t"), goal=5.0)
    tr = res["train"]
    nmax = max((r["threads"] for r in tr), default=None)
    one = {r["model"]: r for r in tr if r["threads"] == 1}
    for r in tr:
        if r["threads"] != nmax:
            continue
        r1 = one.get(r["model"]) if nmax != 1 else None
        if r["model"] == "784-1024-1024-10":
            add(f"train {r['model']} vs ReferenceTrainer", r["vs_reference"],
                r1 and r1["vs_reference"], goal=10.0)
            add(f"train {r['model']} vs PyTorch", r["vs_torch"], r1 and r1["vs_torch"],
                goal=2.0)
        elif r["model"] == "784-256-256-10":
            add(f"train {r['model']} vs ReferenceTrainer", r["vs_reference"],
                r1 and r1["vs_reference"], goal=15.0)
            add(f"train {r['model']} vs PyTorch", r["vs_torch"], r1 and r1["vs_torch"],
                goal=2.5)
    preds = res.get("predict", [])
    p1 = {p["model"]: p for p in preds if p["threads"] == 1}
    for p in preds:
        if p["threads"] == nmax:
            q = p1.get(p["model"]) if nmax != 1 else None
            add(f"predict batch 1 {p['model']} {p['threads']}T vs PyTorch",
                _ratio(p["torch_us"], p["fastdrop_us"]),
                q and _ratio(q["torch_us"], q["fastdrop_us"]), goal=1.0)
    for mx in res.get("mixed", []):
        add(f"{mx['case']} after a NumPy matmul / alone (median)", mx["ratio_median"],
            goal=1.5, lower_is_better=True)
    for st in res.get("steady", []):
        add(f"train {st['model']} epoch {st['epochs']} / epoch 1 ({st['data']} data)",
            st["ratio"], goal=0.95)
    if res.get("models"):
        from .benchmarks.models import model_targets
        model_targets(res["models"], add)
    for s in res.get("thread_scaling", []):
        if s["model"] == "784-1024-1024-10" and s["threads_hi"] >= 2:
            add(f"thread scaling {s['model']} {s['threads_hi']}T/{s['threads_lo']}T",
                s["fastdrop_scaling"], goal=1.8)
    return out


def _f(v, fmt="{:.1f}", none="—"):
    return none if v is None else fmt.format(v)


def _x(v, what=""):
    return "—" if v is None else f"{v:.2f}× {what}".rstrip()


def _table(header, rows, indent="  "):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = [indent + "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                                for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append(indent + "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                        for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def format_report(data):
    m, s, res = data["machine"], data["settings"], data["results"]
    n = s["threads"]
    fi = m["fastdrop"]
    L = []
    L.append(f"fastdrop {fi['version']} bench — {m['cpu']}, {m['cores']} cores, "
             f"{fi['isa']} kernels, OpenMP {'on' if fi['openmp'] else 'off'}"
             + (f", git {m['git']}" if m.get("git") else ""))
    blas = m.get("blas")
    if blas:
        b = blas[0]
        L.append(f"numpy {m['numpy']} / {b.get('internal_api')} {b.get('version')} "
                 f"({b.get('architecture')} kernel); threads set explicitly on both sides "
                 f"(threadpoolctl)")
    else:
        L.append(f"numpy {m['numpy']}; NumPy BLAS threads NOT controlled "
                 f"(threadpoolctl missing)")
    removed = m.get("openblas_env_removed")
    env = {k: v for k, v in (m.get("openblas_env") or {}).items() if v is not None}
    if removed:
        L.append("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE were set (" +
                 ", ".join(f"{k}={v}" for k, v in removed.items()) +
                 "): re-executed without them so NumPy's BLAS runs its best kernel")
    elif env:
        L.append("NOTE: " + ", ".join(f"{k}={v}" for k, v in env.items()) +
                 " is set in this process: NumPy's BLAS may not run its best kernel")
    else:
        L.append("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE: not set (NumPy's BLAS picks its kernel)")
    load = [v for v in (m.get("loadavg_start"), (m.get("loadavg") or [None])[0])
            if v is not None]
    if load:
        busy = max(load) > 0.5 * m["cores"]
        L.append(f"load average {' → '.join(f'{v:.2f}' for v in load)} on {m['cores']} cores"
                 + (": other processes compete for the cores, multi-thread figures of short"
                    " kernels are pessimistic" if busy else ""))
    L.append(f"torch: {m.get('torch', 'not used' if not s.get('torch') else 'not importable')}"
             f"; {s['threads']} threads unless stated; {'quick' if s.get('quick') else 'full'}"
             f" run; figures = best of interleaved samples, ratios from this run")

    if res["gemm"]:
        L.append("")
        L.append(f"GEMM  GFLOP/s (fastdrop._core.gemm vs numpy.matmul out=), {n} threads"
                 + (" and 1 thread" if n > 1 else ""))
        rows = [[r["op"], r["m"], r["n"], r["k"], _f(r["fastdrop_gflops"]),
                 _f(r["numpy_gflops"]), _x(r["ratio"], "numpy")]
                + ([_f(r["fastdrop_1t_gflops"]), _f(r["numpy_1t_gflops"]),
                    _x(r["ratio_1t"], "numpy")] if n > 1 else [])
                for r in res["gemm"]]
        L += _table(["op", "M", "N", "K", f"fd {n}T", f"numpy {n}T", "ratio"]
                    + (["fd 1T", "numpy 1T", "ratio 1T"] if n > 1 else []), rows)
        for r in res["gemm"]:
            if not r.get("agrees", True):
                L.append(f"  WARNING: gemm {r['op']} {r['m']}×{r['n']}×{r['k']} differs from "
                         f"numpy.matmul (max relative difference {r['max_rel_diff']:.2g})")

    if res["dropout"]:
        L.append("")
        L.append(f"Dropout  GB/s (x + y + 1-bit mask), rate {s['rate']}; memcpy = np.copyto "
                 f"(1 thread); torch = F.dropout / native_dropout_backward")
        rows = [[r["kernel"].split("_")[1], f"{r['label']} ({r['mem']})", _f(r["fastdrop_gbs"]),
                 _f(r["fastdrop_1t_gbs"]), _f(r["memcpy_gbs"]), _f(r["reference_gbs"], "{:.2f}"),
                 _f(r["torch_gbs"], "{:.2f}"), _x(r["vs_memcpy"], "memcpy"),
                 _x(r["vs_reference"], "ref"), _x(r["vs_torch"], "torch")]
                for r in res["dropout"]]
        L += _table(["dir", "size", f"fd {n}T", "fd 1T", "memcpy", "numpy-ref", "torch",
                     "vs memcpy", "vs ref", "vs torch"], rows)

    if res["relu"]:
        L.append("")
        L.append("ReLU  GB/s (relu: x + y; backward: grad + y + out); numpy = np.maximum / "
                 "np.multiply(g, y>0) with out=")
        rows = [[r["kernel"], f"{r['label']} ({r['mem']})", _f(r["fastdrop_gbs"]),
                 _f(r["fastdrop_1t_gbs"]), _f(r["memcpy_gbs"]), _f(r["numpy_gbs"]),
                 _x(r["vs_memcpy"], "memcpy"), _x(r["vs_numpy"], "numpy")] for r in res["relu"]]
        L += _table(["kernel", "size", f"fd {n}T", "fd 1T", "memcpy", "numpy", "vs memcpy",
                     "vs numpy"], rows)

    if res["softmax_cross_entropy"]:
        L.append("")
        L.append("softmax_cross_entropy (loss + gradient), µs per call, vs "
                 "fastdrop.reference")
        rows = [[f"{r['batch']}×{r['classes']}", _f(r["fastdrop_us"]),
                 _f(r.get("fastdrop_1t_us")), _f(r["reference_us"]), _x(r["ratio"], "ref"),
                 _x(r.get("ratio_1t"), "ref")] for r in res["softmax_cross_entropy"]]
        L += _table(["batch×classes", f"fd {n}T µs", "fd 1T µs", "reference µs", "ratio",
                     "ratio 1T"], rows)

    if res.get("adam"):
        L.append("")
        L.append("Adam update  GB/s (28 B/param), vs fastdrop.reference.adam_update")
        rows = [[f"{r['params']:,} params", _f(r["fastdrop_gbs"]), _f(r.get("fastdrop_1t_gbs")),
                 _f(r["reference_gbs"], "{:.2f}"), _x(r["ratio"], "ref"),
                 _x(r.get("ratio_1t"), "ref")] for r in res["adam"]]
        L += _table(["size", f"fd {n}T", "fd 1T", "reference", "ratio", "ratio 1T"], rows)

    if res["train"]:
        L.append("")
        L.append(f"Training step  samples/s, batch {s['batch']}, dropout {s['rate']}, Adam "
                 f"(Sequential.fit steady state vs ReferenceTrainer vs torch)")
        rows = [[r["model"], r["threads"], _f(r["fastdrop_sps"], "{:,.0f}"),
                 _f(r["reference_sps"], "{:,.0f}"), _f(r["torch_sps"], "{:,.0f}"),
                 _x(r["vs_reference"], "ref"), _x(r["vs_torch"], "torch")]
                for r in res["train"]]
        L += _table(["model", "threads", "fastdrop", "reference", "torch", "vs ref",
                     "vs torch"], rows)
    if res.get("thread_scaling"):
        L.append("")
        L.append("Thread scaling of the training step")
        rows = [[r["model"], f"{r['threads_hi']}T/{r['threads_lo']}T",
                 _x(r["fastdrop_scaling"]), _x(r["reference_scaling"]),
                 _x(r["torch_scaling"])] for r in res["thread_scaling"]]
        L += _table(["model", "threads", "fastdrop", "reference", "torch"], rows)
    if res.get("predict"):
        L.append("")
        L.append("predict latency, batch 1 (model.predict; torch: eval + inference_mode)")
        rows = [[r["model"], r["threads"], _f(r["fastdrop_us"]), _f(r["reference_us"]),
                 _f(r["torch_us"]), _x(_ratio(r["reference_us"], r["fastdrop_us"]), "ref"),
                 _x(_ratio(r["torch_us"], r["fastdrop_us"]), "torch")]
                for r in res["predict"]]
        L += _table(["model", "threads", "fastdrop µs", "reference µs", "torch µs",
                     "vs ref", "vs torch"], rows)
    if res.get("mixed"):
        L.append("")
        L.append("Beside NumPy: the call alone vs right after a NumPy matmul (OpenBLAS threads "
                 "spinning), µs")
        rows = [[r["case"], r["threads"], _f(r["alone_median_us"]), _f(r["alone_p99_us"]),
                 _f(r["mixed_median_us"]), _f(r["mixed_p99_us"]), _x(r["ratio_median"]),
                 _x(r["ratio_p99"])] for r in res["mixed"]]
        L += _table(["case", "threads", "alone median", "alone p99", "after numpy median",
                     "after numpy p99", "ratio median", "ratio p99"], rows)
    if res.get("steady"):
        L.append("")
        L.append("Steady state: training samples/s per epoch on Fashion-MNIST (fit, one call "
                 "per epoch)")
        rows = [[r["model"], f"{r['data']} ({r['samples']:,})", r["threads"],
                 " ".join(f"{v:,.0f}" for v in r["epoch_sps"]), _x(r["ratio"])]
                for r in res["steady"]]
        L += _table(["model", "data", "threads", "epochs 1..N", "last / first"], rows)
    if res.get("targets"):
        L.append("")
        L.append("Targets (ratios measured in this run)")
        rows = []

        def fmt(v, unit):
            if v is None:
                return "—"
            return {"×": f"{v:.2f}×", "µs": f"{v:.1f} µs"}.get(unit, f"{v:,.0f}/s")

        for t in res["targets"]:
            u = t["unit"]
            rel = "≤" if t.get("lower_is_better") else "≥"
            goal = (f"{rel} {t['goal']:g} µs" if u == "µs" else
                    f"{rel} {t['goal']:g}×" if u == "×" else f"{rel} {t['goal']:,.0f}/s")
            rows.append([t["target"], fmt(t["value"], u), goal,
                         "met" if t["met"] else "MISSED", fmt(t.get("value_1t"), u)])
        L += _table(["target", f"measured ({n}T)", "goal", "", "same at 1T"], rows)
    L.append("")
    L.append(f"elapsed {data['elapsed_s']:.1f} s")
    return "\n".join(L)


# -------------------------------------------------------------------------- plots


def write_plots(data, directory):
    """PNG plots (throughput vs size per kernel, thread scaling); returns the paths, or
    None with a one-line notice when matplotlib is not importable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("fastdrop bench: matplotlib is not installed: no plots "
              "(pip install matplotlib)", file=sys.stderr)
        return None
    os.makedirs(directory, exist_ok=True)
    res = data["results"]
    n = data["settings"]["threads"]
    paths = []

    def save(fig, name):
        p = os.path.join(directory, name)
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)

    sq = [r for r in res["gemm"] if r["op"] == "square"]
    if res["gemm"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        if sq:
            ax = axes[0]
            ax.plot([r["m"] for r in sq], [r["fastdrop_gflops"] for r in sq], "o-",
                    label="fastdrop")
            ax.plot([r["m"] for r in sq], [r["numpy_gflops"] for r in sq], "s--",
                    label="numpy.matmul")
            if all(r.get("fastdrop_1t_gflops") for r in sq):
                ax.plot([r["m"] for r in sq], [r["fastdrop_1t_gflops"] for r in sq], "o:",
                        label="fastdrop 1T")
                ax.plot([r["m"] for r in sq], [r["numpy_1t_gflops"] for r in sq], "s:",
                        label="numpy.matmul 1T")
            ax.set_xscale("log", base=2)
            ax.set_xticks([r["m"] for r in sq], [str(r["m"]) for r in sq])
            ax.minorticks_off()
            ax.set_xlabel("square size N")
            ax.set_ylabel("GFLOP/s")
            ax.set_title(f"SGEMM square ({n} threads unless 1T)")
            ax.legend()
        mlp = [r for r in res["gemm"] if r["op"] != "square"]
        ax = axes[1]
        if mlp:
            idx = np.arange(len(mlp))
            ax.bar(idx - 0.2, [r["fastdrop_gflops"] for r in mlp], 0.4, label="fastdrop")
            ax.bar(idx + 0.2, [r["numpy_gflops"] for r in mlp], 0.4, label="numpy.matmul")
            ax.set_xticks(idx, [f"{r['op']}\n{r['m']}×{r['n']}×{r['k']}" for r in mlp],
                          fontsize=8)
            ax.set_ylabel("GFLOP/s")
            ax.set_title(f"SGEMM MLP shapes (M×N×K), {n} threads")
            ax.legend()
        save(fig, "gemm.png")

    def elem_plot(rows, kernels, name, title, extra):
        if not rows:
            return
        fig, axes = plt.subplots(1, len(kernels), figsize=(5.5 * len(kernels), 4),
                                 squeeze=False)
        for ax, k in zip(axes[0], kernels):
            rs = [r for r in rows if r["kernel"] == k]
            sizes = [4 * r["elements"] / _MB for r in rs]
            ax.plot(sizes, [r["fastdrop_gbs"] for r in rs], "o-", label=f"fastdrop {n}T")
            ax.plot(sizes, [r["fastdrop_1t_gbs"] for r in rs], "o:", label="fastdrop 1T")
            ax.plot(sizes, [r["memcpy_gbs"] for r in rs], "k--", label="memcpy (np.copyto)")
            for key, label in extra:
                pts = [(s_, r[key]) for s_, r in zip(sizes, rs) if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), "s-", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [r["mem"] for r in rs])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("tensor size (float32)")
            ax.set_ylabel("GB/s")
            ax.set_title(k)
            ax.legend(fontsize=8)
        fig.suptitle(title)
        save(fig, name)

    elem_plot(res["dropout"], ["dropout_forward", "dropout_backward"], "dropout.png",
              "Dropout throughput vs size",
              [("reference_gbs", "NumPy reference"), ("torch_gbs", "torch")])
    elem_plot(res["relu"], ["relu", "relu_backward"], "relu.png", "ReLU throughput vs size",
              [("numpy_gbs", "numpy")])

    if res["softmax_cross_entropy"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        rs = res["softmax_cross_entropy"]
        for batch in sorted({r["batch"] for r in rs}):
            b = [r for r in rs if r["batch"] == batch]
            ax.plot([r["classes"] for r in b], [r["batch"] / r["fastdrop_us"] * 1e6 for r in b],
                    "o-", label=f"fastdrop, batch {batch}")
            ax.plot([r["classes"] for r in b], [r["batch"] / r["reference_us"] * 1e6 for r in b],
                    "s--", label=f"reference, batch {batch}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("classes")
        ax.set_ylabel("rows/s")
        ax.set_title("softmax cross-entropy (loss + grad)")
        ax.legend(fontsize=8)
        save(fig, "softmax_cross_entropy.png")

    if res["train"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        models = sorted({r["model"] for r in res["train"]})
        for model in models:
            rs = sorted((r for r in res["train"] if r["model"] == model),
                        key=lambda r: r["threads"])
            th = [r["threads"] for r in rs]
            ax.plot(th, [r["fastdrop_sps"] for r in rs], "o-", label=f"fastdrop {model}")
            ax.plot(th, [r["reference_sps"] for r in rs], "s:", label=f"reference {model}")
            if all(r.get("torch_sps") for r in rs):
                ax.plot(th, [r["torch_sps"] for r in rs], "^--", label=f"torch {model}")
        ax.set_xticks(sorted({r["threads"] for r in res["train"]}))
        ax.set_yscale("log")
        ax.set_xlabel("threads")
        ax.set_ylabel("samples/s")
        ax.set_title("Training step throughput vs threads (batch 128)")
        ax.legend(fontsize=7)
        save(fig, "train_threads.png")
    return paths


# --------------------------------------------------------------------------- main


_CLI_PLOTS_DEFAULT = "bench-plots"


def _plots_requested(args):
    """The plots directory if plots were asked for: the CLI's --plots option has a default
    directory, so that default counts only when --plots is on the command line."""
    plots = getattr(args, "plots", None)
    if plots == _CLI_PLOTS_DEFAULT and not any(
            a == "--plots" or a.startswith("--plots=") for a in sys.argv[1:]):
        return None
    return plots or None


def _reexec_without_openblas_env(args, environ=None, runner=subprocess.run):
    """Run ``python -m fastdrop bench`` with the same arguments in a child process whose
    environment lacks OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; returns its exit code."""
    env = dict(os.environ if environ is None else environ)
    removed = {k: env.pop(k) for k in _OPENBLAS_ENV if k in env}
    env[_CHILD_ENV] = json.dumps(removed)
    argv = [sys.executable, "-m", "fastdrop", "bench"]
    if getattr(args, "json", None):
        argv += ["--json", args.json]
    if _plots_requested(args):
        argv += ["--plots", args.plots]
    if getattr(args, "threads", 0):
        argv += ["--threads", str(args.threads)]
    if getattr(args, "quick", False):
        argv.append("--quick")
    print("fastdrop bench: " + ", ".join(f"{k}={v}" for k, v in removed.items()) +
          " set: re-running without them so NumPy's BLAS runs its best kernel",
          file=sys.stderr, flush=True)
    return runner(argv, env=env).returncode


def main(args, cfg=None):
    """Entry point of ``python -m fastdrop bench`` (args: json, plots, threads, quick).
    ``cfg`` overrides the measurement plan (tests pass ``tiny_config()``)."""
    if cfg is None and not os.environ.get(_CHILD_ENV) and \
            any(k in os.environ for k in _OPENBLAS_ENV):
        return _reexec_without_openblas_env(args)
    if cfg is None:
        cfg = config(quick=bool(getattr(args, "quick", False)),
                     threads=getattr(args, "threads", 0) or 0)
    t_start = time.perf_counter()
    quiet = os.environ.get("FASTDROP_BENCH_QUIET", "") not in ("", "0")
    log = None if quiet else (lambda s: print(f"  {time.perf_counter() - t_start:6.1f}s  {s}",
                                              file=sys.stderr, flush=True))
    print(f"fastdrop bench: measuring ({'quick' if cfg.get('quick') else 'full'}, "
          f"{cfg['threads']} threads)...", file=sys.stderr, flush=True)
    data = run(cfg, log)
    print(format_report(data))
    path = getattr(args, "json", None)
    if path:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=_json_default)
        os.replace(tmp, path)
        print(f"figures saved to {path}")
    plots = _plots_requested(args)
    if plots:
        paths = write_plots(data, plots)
        if paths:
            print(f"{len(paths)} plots written to {plots}/")
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)

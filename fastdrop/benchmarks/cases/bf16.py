"""bf16 mixed precision (issue 19): the bf16 GEMM (``_core.gemm_bf16``) on every bf16 path
this CPU runs beside the fp32 SGEMM (``_core.gemm``) on the GEMMs of an MLP training step;
the MLP trained under the ``'mixed_bfloat16'`` policy beside ``'float32'`` and beside
PyTorch fp32 and ``torch.autocast("cpu", dtype=torch.bfloat16)``; Monte Carlo dropout
``predict`` in bf16 beside fp32.

The bf16 path (``_core.set_bf16_path``) is process-wide state: every bf16 callable here
selects its own path first, so sides can be interleaved in any order; ``bench`` puts the
path it found back at the end.  The dtype policy is set only while a model is being made
(layers take the global policy at construction, as in Keras) and restored right after."""
import contextlib

import numpy as np

from .. import peers
from ..harness import model_name, ratio
from . import mlp

#: the model of the training and MC cases
MLP_SIZES = (784, 1024, 1024, 10)


def mlp_shapes(batch, sizes=(784, 1024)):
    """The GEMMs of a training step of an MLP with input ``sizes[0]`` and hidden width
    ``sizes[1]`` at ``batch`` rows: (name, m, n, k, trans_a, trans_b)."""
    fan_in, h = sizes
    return [(f"mlp-{batch}-fwd", batch, h, fan_in, False, False),
            (f"mlp-{batch}-fwd2", batch, h, h, False, False),
            (f"mlp-{batch}-dW", h, h, batch, True, False),
            (f"mlp-{batch}-dX", batch, h, h, False, True)]


def shapes(batches=(128, 256), sizes=(784, 1024), square=(1024,)):
    """``mlp_shapes`` at every batch, then the squares."""
    out = [s for b in batches for s in mlp_shapes(b, tuple(sizes))]
    return out + [(f"sq-{s}", s, s, s, False, False) for s in square]


#: bench/bench_bf16.py's shapes: fwd, fwd2, dW, dX at batch 128 and 256, and 1024³
SHAPES = shapes()


def paths():
    """The bf16 paths a GEMM can take here: every path compiled in and supported by the
    CPU while the fp32 path is avx512; below it the kernel runs portable whatever the
    chosen path, so only ``('portable',)``."""
    from ... import _core
    if _core.isa() != "avx512":
        return ("portable",)
    return tuple(_core.bf16_paths_supported())


def use_path(path):
    """Select bf16 path ``path`` (a no-op below the avx512 fp32 path: portable then)."""
    from ... import _core
    if _core.isa() == "avx512":
        _core.set_bf16_path(path)


@contextlib.contextmanager
def path_restored():
    """Yields the bf16 path GEMMs take now (the default the user gets), put back on exit."""
    from ... import _core
    old = _core.bf16_path()
    try:
        yield old
    finally:
        if _core.isa() == "avx512":
            _core.set_bf16_path(old)


@contextlib.contextmanager
def policy(name):
    """The global dtype policy ``name`` inside the block, the previous one after it."""
    from ... import mixed_precision
    old = mixed_precision.global_policy()
    mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        mixed_precision.set_global_policy(old)


# ------------------------------------------------------------------------ GEMM


def operands(m, n, k, trans_a, trans_b, rng):
    """(a, b, out) as ``gemm.operands``: a stored (k, m) when trans_a, b (n, k) when trans_b."""
    from .gemm import operands as f32_operands
    return f32_operands(m, n, k, trans_a, trans_b, rng)


def bf16_rounded(x):
    """float32 ``x`` rounded to bf16 (RNE, as the kernels round) and back to float32."""
    from ... import _core
    bits = np.empty(x.shape, np.uint16)
    _core.f32_to_bf16(np.ascontiguousarray(x, np.float32), bits)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def gemm_sides(a, b, outs, trans_a=False, trans_b=False, paths_=None):
    """{"fp32": ``_core.gemm``, <path>: ``_core.gemm_bf16`` on that path, ...} for the
    paths ``paths_`` (default ``paths()``); ``outs``: one output array per side (a dict),
    or one array all sides write."""
    from ... import _core
    ps = paths() if paths_ is None else tuple(paths_)
    out = (lambda k: outs[k]) if isinstance(outs, dict) else (lambda k: outs)
    c32 = out("fp32")
    sides = {"fp32": lambda: _core.gemm(a, b, c32, trans_a, trans_b, 1.0, 0.0)}

    def bf16(path):
        c = out(path)

        def run():
            use_path(path)
            _core.gemm_bf16(a, b, c, trans_a, trans_b, 1.0, 0.0)
        return run

    for p in ps:
        sides[p] = bf16(p)
    return sides


def gemm_row(ctx, shape, ps):
    """Measure ``gemm_sides`` on one shape; the row (GFLOP/s per side, ratios to fp32,
    each bf16 product's max difference from the fp32 product of the bf16-rounded operands,
    relative to its largest entry)."""
    name, m, n, k, ta, tb = shape
    a, b, _ = operands(m, n, k, ta, tb, ctx.rng)
    outs = {s: np.empty((m, n), np.float32) for s in ("fp32",) + ps}
    r = ctx.measure(gemm_sides(a, b, outs, ta, tb, ps), scale=1.0)
    flop = 2.0 * m * n * k
    g = {s: flop / v["best"] / 1e9 for s, v in r.items()}
    row = dict(op=name, m=m, n=n, k=k, trans_a=ta, trans_b=tb, threads=ctx.n, paths=list(ps),
               fp32_gflops=g["fp32"], fp32_median_gflops=flop / r["fp32"]["median"] / 1e9)
    # a fast wrong kernel is no result: the products of bf16 values are exact in fp32
    want = peers.numpy_gemm(bf16_rounded(a), bf16_rounded(b), np.empty((m, n), np.float32),
                            ta, tb)()
    scale = max(float(np.max(np.abs(want))), 1e-30)
    ok = True
    for p in ps:
        row[f"{p}_gflops"] = g[p]
        row[f"{p}_median_gflops"] = flop / r[p]["median"] / 1e9
        row[f"{p}_vs_fp32"] = g[p] / g["fp32"]
        err = float(np.max(np.abs(outs[p] - want)) / scale)
        row[f"{p}_max_rel_diff"] = err
        ok = ok and err < 1e-4
    row["agrees"] = bool(ok)
    ctx.log(f"bf16 gemm {name} {m}x{n}x{k}: fp32 {g['fp32']:.1f}, " +
            ", ".join(f"{p} {g[p]:.1f}" for p in ps) + " GFLOP/s")
    return row


def bench_gemm(ctx):
    """GFLOP/s of fp32 and of every bf16 path on ``cfg["bf16_gemm"]``'s shapes (batches,
    sizes, square), all threads."""
    cfg = ctx.cfg.get("bf16_gemm")
    if not cfg:
        return []
    ctx.threads(ctx.n)
    ps = paths()
    todo = shapes(cfg.get("batches", ()), cfg.get("sizes", (784, 1024)), cfg.get("square", ()))
    with path_restored():
        return [gemm_row(ctx, shape, ps) for shape in todo]


# -------------------------------------------------------------------- training


def fastdrop_trainer(policy_name, sizes, x, y, batch, rate, path=None, seed=0, warmup=True):
    """``mlp.fastdrop_trainer`` with the model made under dtype policy ``policy_name``
    (restored after); each call selects bf16 ``path`` first when given.
    Returns (callable, steps per call, model)."""
    with policy(policy_name):
        fd, steps, model = mlp.fastdrop_trainer(sizes, x, y, batch, rate, seed, warmup=False)
    if path is not None:
        def run():
            use_path(path)
            fd()
    else:
        run = fd
    if warmup:
        run()
    return run, steps, model


def train_side(side, sizes, x, y, batch, rate, torch=None, warmup=False):
    """(callable, steps per call) of one side of ``train_sides``: "fp32", a bf16 path name,
    "torch" or "torch_bf16" (these two need ``torch``)."""
    if side == "fp32":
        return fastdrop_trainer("float32", sizes, x, y, batch, rate, warmup=warmup)[:2]
    if side in ("torch", "torch_bf16"):
        if torch is None:
            raise ValueError(f"side {side!r} needs torch")
        return peers.torch_mlp_trainer(torch, sizes, x, y, batch, rate, warmup=warmup,
                                       autocast=side == "torch_bf16")[:2]
    return fastdrop_trainer("mixed_bfloat16", sizes, x, y, batch, rate, path=side,
                            warmup=warmup)[:2]


def train_sides(sizes, x, y, batch, rate, torch=None, paths_=None, warmup=False):
    """{side: (callable, steps per call)}: "fp32" (policy 'float32'), one per bf16 path
    (policy 'mixed_bfloat16' on that path), and with ``torch`` "torch" (fp32) and
    "torch_bf16" (``torch.autocast("cpu", dtype=torch.bfloat16)``), all on the same batches
    of (x, y), the same model (Dense-ReLU [+ Dropout(rate)] per hidden layer, Adam); the
    torch sides are None without ``torch``."""
    ps = paths() if paths_ is None else tuple(paths_)
    sides = {k: train_side(k, sizes, x, y, batch, rate, torch, warmup) for k in ("fp32",) + ps}
    for k in ("torch", "torch_bf16"):
        sides[k] = None if torch is None else train_side(k, sizes, x, y, batch, rate, torch,
                                                         warmup)
    return sides


#: how the report and the JSON name each side
SIDE_LABELS = {"fp32": "fastdrop float32", "torch": "PyTorch fp32",
               "torch_bf16": "PyTorch bf16 autocast"}


def side_label(side):
    return SIDE_LABELS.get(side, f"fastdrop mixed_bfloat16 {side}")


def bench_train(ctx):
    """Training samples/s of ``cfg["bf16_train"]``'s MLP per side of ``train_sides``, all
    threads, sides interleaved (one call each in turn); one row per side."""
    cfg = ctx.cfg.get("bf16_train")
    if not cfg:
        return []
    torch = ctx.torch()             # imported first: ctx.threads sets its thread count too
    ctx.threads(ctx.n)
    sizes = tuple(cfg.get("sizes", MLP_SIZES))
    batch, rate = cfg.get("batch", ctx.cfg["batch"]), cfg.get("rate", ctx.cfg["rate"])
    x, y = mlp.train_data(sizes, cfg["steps"], batch, ctx.rng)
    with path_restored() as default:
        cases = {k: c for k, c in train_sides(sizes, x, y, batch, rate, torch,
                                              warmup=True).items() if c is not None}
        r = ctx.measure({k: fn for k, (fn, _) in cases.items()}, scale=2.0)
    sps = {k: cases[k][1] * batch / v["best"] for k, v in r.items()}
    rows = []
    for k in cases:
        rows.append(dict(model=model_name(sizes), side=k, label=side_label(k),
                         policy="float32" if k in ("fp32", "torch") else "mixed_bfloat16",
                         default_path=k == default, threads=ctx.n, batch=batch, rate=rate,
                         steps_per_call=cases[k][1], sps=sps[k],
                         median_sps=cases[k][1] * batch / r[k]["median"],
                         samples=r[k]["samples"], vs_fp32=sps[k] / sps["fp32"],
                         vs_torch_bf16=ratio(sps[k], sps.get("torch_bf16"))))
    ctx.log(f"bf16 train {model_name(sizes)}: " +
            ", ".join(f"{k} {v:,.0f}" for k, v in sps.items()) + " samples/s")
    return rows


# ------------------------------------------------------------------ MC dropout


def mc_model(policy_name, sizes, rate, seed=0):
    """``mlp.fastdrop_mlp`` made under dtype policy ``policy_name`` (restored after), built."""
    with policy(policy_name):
        model = mlp.fastdrop_mlp(sizes, rate, seed)
    model.build(sizes[0])
    return model


def mc_sides(sizes, rate, x, T, paths_=None):
    """{"fp32": ``predict(x, mc_samples=T)`` of the float32 model, <path>: the same of the
    'mixed_bfloat16' model (same seed, same initial weights) on that bf16 path}."""
    ps = paths() if paths_ is None else tuple(paths_)
    f32 = mc_model("float32", sizes, rate)
    b16 = mc_model("mixed_bfloat16", sizes, rate)
    sides = {"fp32": lambda: f32.predict(x, mc_samples=T, seed=0)}

    def bf16(path):
        def run():
            use_path(path)
            return b16.predict(x, mc_samples=T, seed=0)
        return run

    for p in ps:
        sides[p] = bf16(p)
    return sides


def bench_mc(ctx):
    """Monte Carlo dropout ``predict`` (T passes) of ``cfg["bf16_mc"]``'s batch on the MLP,
    float32 beside each bf16 path, all threads; one row per side."""
    cfg = ctx.cfg.get("bf16_mc")
    if not cfg:
        return []
    ctx.threads(ctx.n)
    sizes = tuple(cfg.get("sizes", MLP_SIZES))
    T, batch, rate = cfg["T"], cfg["batch"], cfg.get("rate", ctx.cfg["rate"])
    x = ctx.rng.random((batch, sizes[0]), dtype=np.float32)
    with path_restored() as default:
        r = ctx.measure(mc_sides(sizes, rate, x, T), scale=1.0)
    rows = []
    for k, v in r.items():
        rows.append(dict(model=model_name(sizes), side=k, label=side_label(k),
                         default_path=k == default, threads=ctx.n, T=T, batch=batch,
                         rate=rate, ms=v["best"] * 1e3, median_ms=v["median"] * 1e3,
                         sps=batch / v["best"], vs_fp32=r["fp32"]["best"] / v["best"]))
    ctx.log(f"bf16 MC T={T} batch {batch}: " +
            ", ".join(f"{k} {v['best'] * 1e3:.2f} ms" for k, v in r.items()))
    return rows


def bench(ctx):
    """The bf16 section: {"paths", "default_path", "cpu", "gemm", "train", "mc"}
    (``default_path``: the path GEMMs take unless told otherwise, the one the targets use);
    the chosen bf16 path and the global dtype policy are as found afterwards."""
    from ... import runtime
    with path_restored() as default:
        info = runtime.cpu_info()
        out = dict(paths=list(paths()), default_path=default,
                   cpu=dict(bf16=info.get("bf16"), bf16_supported=info.get("bf16_supported"),
                            amx=info.get("amx"), isa=info.get("isa")))
        out["gemm"] = bench_gemm(ctx)
        out["train"] = bench_train(ctx)
        out["mc"] = bench_mc(ctx)
    ctx.threads(ctx.n)
    return out

"""Optimizer updates: the fused Adam kernel beside ``fastdrop.reference.adam_update``
(the ``bench`` report), Adam with subnormal moments, and every optimizer (RMSprop,
Adagrad, Adadelta, Nadam, Adam with each clipping mode) on the parameter block of
784-1024-1024-10 beside the float64 reference of Keras's formulas and PyTorch."""
import numpy as np

from ..harness import Case

#: the four variables of 784-1024-1024-10 as segments of one parameter block
BLOCK_SHAPES = [(784, 1024), (1024,), (1024, 1024), (1024,), (1024, 10), (10,)]


def segments(shapes=BLOCK_SHAPES):
    """([(lo, hi)], total) of variables with these shapes laid end to end."""
    segs, lo = [], 0
    for s in shapes:
        n = int(np.prod(s))
        segs.append((lo, lo + n))
        lo += n
    return segs, lo


def _torch_factory(cls, **kw):
    return lambda t, p: getattr(t.optim, cls)(p, lr=1e-3, eps=1e-7, foreach=True, **kw)


#: name: (fastdrop factory, (reference kind, hyperparameters), torch factory or None,
#: bytes read + written per parameter by the fused kernel)
OPTIMIZERS = {
    "rmsprop": (lambda O: O.RMSprop(1e-3), ("rmsprop", {}),
                _torch_factory("RMSprop", alpha=0.9), 16),
    "rmsprop-centered-momentum": (
        lambda O: O.RMSprop(1e-3, momentum=0.9, centered=True),
        ("rmsprop", {"momentum": 0.9, "centered": True}),
        _torch_factory("RMSprop", alpha=0.9, momentum=0.9, centered=True), 24),
    "adagrad": (lambda O: O.Adagrad(1e-3), ("adagrad", {}),
                _torch_factory("Adagrad", initial_accumulator_value=0.1), 16),
    "adadelta": (lambda O: O.Adadelta(1e-3), ("adadelta", {}),
                 _torch_factory("Adadelta", rho=0.95), 20),
    "nadam": (lambda O: O.Nadam(1e-3), ("nadam", {}), _torch_factory("NAdam"), 20),
    "adam-clipnorm": (lambda O: O.Adam(1e-3, clipnorm=1.0), ("adam", {"clipnorm": 1.0}),
                      None, 24),
    "adam-global_clipnorm": (lambda O: O.Adam(1e-3, global_clipnorm=1.0),
                             ("adam", {"global_clipnorm": 1.0}), None, 24),
    "adam-clipvalue": (lambda O: O.Adam(1e-3, clipvalue=0.01), ("adam", {"clipvalue": 0.01}),
                       None, 20),
}


def block(n, rng):
    """(weights, gradients) of n parameters."""
    w = rng.standard_normal(n, dtype=np.float32) * np.float32(0.05)
    g = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
    return w, g


def optimizer_sides(name, w, g, segs, torch=None):
    """{"fastdrop", "reference", "torch"} updates of ``OPTIMIZERS[name]`` on copies of w
    (the reference in float64 per segment; torch None without torch or a twin)."""
    from ... import optimizers as O
    from ...reference import optimizers as RO
    make, (kind, hp), tmake, _ = OPTIMIZERS[name]
    opt = make(O)
    opt.build(w.size)
    p = w.copy()
    variables = [w[a:b].astype(np.float64) for a, b in segs]
    grads = [g[a:b].astype(np.float64) for a, b in segs]
    slots = RO.init_slots(kind, variables, **hp)
    state = {"t": 0}

    def ref():
        state["t"] += 1
        RO.step(kind, variables, grads, slots, state["t"], 1e-3, **hp)

    tstep = None
    if torch is not None and tmake is not None:
        tp = torch.nn.Parameter(torch.from_numpy(w.copy()))
        tp.grad = torch.from_numpy(g.copy())
        tstep = tmake(torch, [tp]).step
    return {"fastdrop": lambda: opt.apply(p, g, segs), "reference": ref, "torch": tstep}


def adam_arrays(n, rng):
    """(w, g, m, v) with zero moments."""
    w = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
    return w, g, np.zeros(n, np.float32), np.zeros(n, np.float32)


def adam_sides(w, g, m, v, api="core"):
    """{"fastdrop", "reference"}: ``_core.adam_update`` (``api="core"``) or
    ``optimizers.Adam.apply`` on a copy of w (``"public"``) beside the reference."""
    from ... import _core
    from ... import reference as R
    if api == "core":
        fd = lambda: _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 10)  # noqa
    else:
        from ...optimizers import Adam
        opt = Adam(learning_rate=1e-3)
        opt.build(w.size)
        p = w.copy()
        fd = lambda: opt.apply(p, g)  # noqa: E731
    rm, rv = m.copy(), v.copy()
    return {"fastdrop": fd, "reference": lambda: R.adam_update(w, g, rm, rv, 1e-3, 10)}


def adam_subnormal_step(n=1 << 20):
    """One Adam update with a third of the moments subnormal (weights fed by always-zero
    pixels after a few epochs), reset before each call."""
    from ... import _core
    g = np.zeros(n, np.float32)
    g[::3] = 1e-3
    w = np.ones(n, np.float32)
    m = np.full(n, 1e-39, np.float32)
    v = np.full(n, 1e-39, np.float32)

    def step():
        m[1::3] = 1e-39
        v[1::3] = 1e-39
        _core.adam_update(w, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.0, 10)
    return step


def bench(ctx):
    """GB/s (28 B a parameter) for every size of ``cfg["adam_sizes"]``."""
    ctx.threads(ctx.n)
    rows = []
    for n in ctx.cfg["adam_sizes"]:
        s = adam_sides(*adam_arrays(n, ctx.rng))
        fn = s["fastdrop"]
        r = ctx.measure({
            "fastdrop": Case(fn, ctx.fd_threads(ctx.n)),
            "fastdrop_1t": Case(fn, ctx.fd_threads(1)) if ctx.n > 1 else None,
            "reference": s["reference"]}, scale=0.5)
        nb = 28 * n     # w, g, m, v read; w, m, v written
        fd, ref = r["fastdrop"]["best"], r["reference"]["best"]
        fd1 = r["fastdrop_1t"]["best"] if "fastdrop_1t" in r else None
        rows.append(dict(params=n, threads=ctx.n, fastdrop_gbs=nb / fd / 1e9,
                         fastdrop_1t_gbs=nb / fd1 / 1e9 if fd1 else None,
                         reference_gbs=nb / ref / 1e9, ratio=ref / fd,
                         ratio_1t=ref / fd1 if fd1 else None))
        ctx.log(f"adam {n}: {ref / fd:.1f}x")
    return rows

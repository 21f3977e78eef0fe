"""Dropout forward (mask drawn and applied) and backward (mask applied) beside
``np.copyto`` (memcpy), the NumPy reference and PyTorch's ``F.dropout`` /
``native_dropout_backward``.  GB/s count x + y + the 1-bit mask."""
import numpy as np

from .. import peers
from ..harness import Case, elem_label, ratio

SEED = 1234


def arrays(n, rng, rate=0.5, seed=SEED):
    """(x, y, mask): n float32 inputs, an output, and the forward's packed mask."""
    from ... import _core
    x = rng.standard_normal(n, dtype=np.float32)
    y = np.zeros_like(x)
    mask = np.empty((n + 7) // 8, np.uint8)
    _core.dropout_forward(x, y, seed, rate, mask)
    return x, y, mask


def nbytes(n):
    return 8 * n + (n + 7) // 8


def dropout_sides(direction, x, y, mask, rate=0.5, seed=SEED, api="core", torch=None,
                  baselines=True):
    """{"fastdrop", "memcpy", "reference", "torch"} for ``direction`` 'forward' or
    'backward'.  ``api="core"``: ``_core.dropout_forward`` / ``dropout_apply`` (what the
    engine calls), ``"public"``: ``fastdrop.kernels.dropout`` / ``dropout_backward``.
    ``baselines=False`` leaves the slow reference and torch out (None)."""
    from ... import _core
    from ... import kernels as K
    from ... import reference as R
    scale = float(np.float32(1.0 / (1.0 - rate)))
    t_fwd, t_bwd = peers.torch_dropout(torch, x, rate) if baselines else (None, None)
    if direction == "forward":
        if api == "core":
            fd = lambda: _core.dropout_forward(x, y, seed, rate, mask)  # noqa: E731
        else:
            fd = lambda: K.dropout(x, rate, seed, out=y)  # noqa: E731
        ref = lambda: R.dropout(x, rate, seed)  # noqa: E731
        tt = t_fwd
    else:
        if api == "core":
            fd = lambda: _core.dropout_apply(x, mask, y, scale)  # noqa: E731
        else:
            fd = lambda: K.dropout_backward(x, mask, rate, out=y)  # noqa: E731
        ref = lambda: R.dropout_backward(x, mask, rate)  # noqa: E731
        tt = t_bwd
    return {"fastdrop": fd, "memcpy": peers.memcpy(y, x),
            "reference": ref if baselines else None, "torch": tt}


def bench(ctx):
    """GB/s per size of ``cfg["elem_sizes"]``, both directions; the reference and torch
    only up to ``cfg["slow_baseline_max"]`` elements."""
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    rate = cfg["rate"]
    torch = ctx.torch()
    if torch is not None:
        torch.set_num_threads(ctx.n)
    rows = []
    fd_n, fd_1 = ctx.fd_threads(ctx.n), ctx.fd_threads(1)
    for size in cfg["elem_sizes"]:
        label, mem = elem_label(size)
        x, y, mask = arrays(size, ctx.rng, rate)
        slow_ok = size <= cfg["slow_baseline_max"]
        nb = nbytes(size)
        for direction in ("forward", "backward"):
            s = dropout_sides(direction, x, y, mask, rate, torch=torch, baselines=slow_ok)
            r = ctx.measure({"fastdrop": Case(s["fastdrop"], fd_n),
                             "fastdrop_1t": Case(s["fastdrop"], fd_1),
                             "memcpy": s["memcpy"], "reference": s["reference"],
                             "torch": s["torch"]})
            gbs = {k: nb / v["best"] / 1e9 for k, v in r.items()}
            gbs["memcpy"] = 8 * size / r["memcpy"]["best"] / 1e9
            row = dict(kernel=f"dropout_{direction}", elements=size, label=label, mem=mem,
                       bytes=nb, threads=ctx.n,
                       fastdrop_gbs=gbs["fastdrop"], fastdrop_1t_gbs=gbs["fastdrop_1t"],
                       memcpy_gbs=gbs["memcpy"], reference_gbs=gbs.get("reference"),
                       torch_gbs=gbs.get("torch"))
            row["vs_memcpy"] = ratio(row["fastdrop_gbs"], row["memcpy_gbs"])
            row["vs_reference"] = ratio(row["fastdrop_gbs"], row["reference_gbs"])
            row["vs_torch"] = ratio(row["fastdrop_gbs"], row["torch_gbs"])
            rows.append(row)
            ctx.log(f"dropout {direction} {label}: {row['fastdrop_gbs']:.1f} GB/s, "
                    f"memcpy {row['memcpy_gbs']:.1f}")
    return rows

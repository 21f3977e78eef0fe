"""Losses: softmax cross-entropy with integer labels (loss + gradient) and binary
cross-entropy from logits, beside the NumPy reference."""
import numpy as np

from ..harness import Case


def xent_arrays(batch, classes, rng):
    """(logits, labels, grad)."""
    logits = (3 * rng.standard_normal((batch, classes))).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int64)
    return logits, labels, np.empty_like(logits)


def xent_sides(logits, labels, grad, api="core"):
    """{"fastdrop", "reference"}.  ``api="core"``: ``_core.softmax_xent_labels`` into
    ``grad``; ``"public"``: ``fastdrop.kernels.softmax_cross_entropy``."""
    from ... import _core
    from ... import kernels as K
    from ... import reference as R
    inv = 1.0 / logits.shape[0]
    if api == "core":
        fd = lambda: _core.softmax_xent_labels(logits, labels, inv, grad)  # noqa: E731
    else:
        fd = lambda: K.softmax_cross_entropy(logits, labels)  # noqa: E731
    return {"fastdrop": fd, "reference": lambda: R.softmax_cross_entropy(logits, labels)}


def bce_arrays(shape, rng):
    """(logits, 0/1 targets, grad)."""
    z = (rng.standard_normal(shape) * 3).astype(np.float32)
    t = (rng.random(shape) < 0.5).astype(np.float32)
    return z, t, np.empty_like(z)


def bce_sides(z, t, g):
    """{"fastdrop": BinaryCrossentropy(from_logits=True).forward_backward, "reference"}."""
    from ...losses import BinaryCrossentropy
    from ...reference import losses as RL
    loss = BinaryCrossentropy(from_logits=True)
    return {"fastdrop": lambda: loss.forward_backward(z, t, g),
            "reference": lambda: RL.binary_crossentropy(z, t)}


def bench(ctx):
    """µs per call for every (batch, classes) of ``cfg["xent"]``."""
    ctx.threads(ctx.n)
    rows = []
    for batch, classes in ctx.cfg["xent"]:
        s = xent_sides(*xent_arrays(batch, classes, ctx.rng))
        fn = s["fastdrop"]
        r = ctx.measure({
            "fastdrop": Case(fn, ctx.fd_threads(ctx.n)),
            "fastdrop_1t": Case(fn, ctx.fd_threads(1)) if ctx.n > 1 else None,
            "reference": s["reference"]}, scale=0.5)
        fd, ref = r["fastdrop"]["best"], r["reference"]["best"]
        fd1 = r["fastdrop_1t"]["best"] if "fastdrop_1t" in r else None
        rows.append(dict(batch=batch, classes=classes, threads=ctx.n, fastdrop_us=fd * 1e6,
                         fastdrop_1t_us=fd1 * 1e6 if fd1 else None,
                         reference_us=ref * 1e6, ratio=ref / fd,
                         ratio_1t=ref / fd1 if fd1 else None,
                         fastdrop_gbs=4 * batch * classes * 2 / fd / 1e9))
        ctx.log(f"softmax_xent {batch}x{classes}: {ref / fd:.1f}x")
    return rows

"""Activation kernels: ReLU and its backward beside NumPy with ``out=`` and memcpy (the
``bench`` report), and every activation of ``_core.act_forward`` / ``act_backward``
beside the float64 reference (``fastdrop.reference.activations``), a float32 NumPy
one-liner and PyTorch (``bench/bench_activations.py``)."""
import numpy as np

from .. import peers
from ..harness import Case, elem_label

RELU_KERNELS = ("relu", "relu_backward")


def arrays(n, rng):
    """(x, g, y, out): inputs, incoming gradients, relu(x), an output."""
    x = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    return x, g, np.maximum(x, np.float32(0)), np.zeros_like(x)


def relu_nbytes(kernel, n):
    return (8 if kernel == "relu" else 12) * n


def relu_sides(kernel, x, g, y, out, api="core"):
    """{"fastdrop", "numpy", "reference", "memcpy"} for ``kernel`` 'relu' or
    'relu_backward' (``y`` = relu(x)).  ``api="core"``: ``_core.relu`` /
    ``relu_backward``; ``"public"``: ``fastdrop.kernels``."""
    from ... import _core
    from ... import kernels as K
    from ... import reference as R
    zero = np.float32(0)
    if kernel == "relu":
        fd = ((lambda: _core.relu(x, out)) if api == "core" else
              (lambda: K.relu(x, out=out)))
        npy = lambda: np.maximum(x, zero, out=out)  # noqa: E731
        ref = lambda: R.relu(x)  # noqa: E731
    else:
        fd = ((lambda: _core.relu_backward(g, x, out)) if api == "core" else
              (lambda: K.relu_backward(g, y, out=out)))
        npy = lambda: np.multiply(g, x > zero, out=out)  # noqa: E731
        ref = lambda: R.relu_backward(g, y)  # noqa: E731
    return {"fastdrop": fd, "numpy": npy, "reference": ref, "memcpy": peers.memcpy(out, x)}


def names():
    from ...reference import activations as RA
    return list(RA.NAMES)


def act_sides(name, direction, x, g, out, d, torch=None):
    """{"fastdrop", "numpy32", "reference64", "memcpy", "torch"} (None where a side has no
    such version) for activation ``name``; backward reads ``out`` = forward(x)."""
    from ... import _core
    from ...reference import activations as RA
    if direction == "forward":
        f32 = peers.numpy32_activation(name)
        tf = peers.torch_activations(torch).get(name) if torch is not None else None
        t = torch.from_numpy(x) if torch is not None else None
        return {"fastdrop": lambda: _core.act_forward(name, x, out),
                "numpy32": (lambda: f32(x)) if f32 is not None else None,
                "reference64": (lambda: RA.forward(name, x)) if name != "gelu" else None,
                "memcpy": peers.memcpy(out, x),
                "torch": (lambda: tf(t)) if tf is not None else None}
    return {"fastdrop": lambda: _core.act_backward(name, g, x, out, d),
            "numpy32": None,
            "reference64": (lambda: RA.backward(name, g, x, out)) if name != "gelu" else None,
            "memcpy": peers.memcpy(out, x), "torch": None}


def act_nbytes(direction, n):
    return (8 if direction == "forward" else 12) * n


def bench(ctx):
    """GB/s of relu and relu_backward per size of ``cfg["elem_sizes"]``."""
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    rows = []
    fd_n, fd_1 = ctx.fd_threads(ctx.n), ctx.fd_threads(1)
    for size in cfg["elem_sizes"]:
        label, mem = elem_label(size)
        x, g, y, out = arrays(size, ctx.rng)
        for kernel in RELU_KERNELS:
            s = relu_sides(kernel, x, g, y, out)
            nb = relu_nbytes(kernel, size)
            r = ctx.measure({"fastdrop": Case(s["fastdrop"], fd_n),
                             "fastdrop_1t": Case(s["fastdrop"], fd_1),
                             "memcpy": s["memcpy"], "numpy": s["numpy"]})
            row = dict(kernel=kernel, elements=size, label=label, mem=mem, bytes=nb,
                       threads=ctx.n,
                       fastdrop_gbs=nb / r["fastdrop"]["best"] / 1e9,
                       fastdrop_1t_gbs=nb / r["fastdrop_1t"]["best"] / 1e9,
                       numpy_gbs=nb / r["numpy"]["best"] / 1e9,
                       memcpy_gbs=8 * size / r["memcpy"]["best"] / 1e9)
            row["vs_memcpy"] = row["fastdrop_gbs"] / row["memcpy_gbs"]
            row["vs_numpy"] = row["fastdrop_gbs"] / row["numpy_gbs"]
            rows.append(row)
            ctx.log(f"{kernel} {label}: {row['fastdrop_gbs']:.1f} GB/s")
    return rows

"""Helpers shared by the tests: data sets, small models, and running one layer's stage
through the engine contract (fastdrop.engine) without a model."""
import numpy as np
import pytest

from fastdrop.engine import Arena, Context


def blobs(n=600, d=20, classes=4, seed=0, spread=3.0):
    """Separable Gaussian blobs: a problem any working trainer solves."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (classes, d))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, d))
    return x.astype(np.float32), y


def mlp(d=20, classes=4, hidden=(32, 16), rate=0.3, seed=0, **dense_kw):
    from fastdrop.layers import Dense, Dropout
    from fastdrop.models import Sequential
    layers = []
    for i, h in enumerate(hidden):
        layers.append(Dense(h, activation="relu", input_dim=d if i == 0 else None, **dense_kw))
        if rate:
            layers.append(Dropout(rate))
    layers.append(Dense(classes, activation="softmax"))
    return Sequential(layers, seed=seed)


def build_layer(layer, in_shape, seed=0, noise_index=1):
    """Build a layer standalone: its variables get values from their initializers."""
    rng = np.random.default_rng(seed)
    layer.build(tuple(in_shape))
    for v in layer.variables:
        v.value = np.asarray(v.initializer(v.shape, rng), np.float32).copy()
        setattr(layer, v.name, v.value)
        if v.trainable:
            v.grad = np.zeros(v.shape, np.float32)
            setattr(layer, "d" + v.name, v.grad)
    if hasattr(layer, "noise_index"):
        layer.noise_index = noise_index
    return layer


def run_stage(stage, x, mode="train", step=0, seed=0, capacity=None):
    """Bind a stage to x's per-sample shape, allocate, and run forward: (stage, ctx, y)."""
    stage.bind(x.shape[1:])
    Arena().allocate([stage], capacity or x.shape[0])
    ctx = Context(mode, x.shape[0], step=step, seed=seed)
    return stage, ctx, stage.forward(ctx, np.ascontiguousarray(x, np.float32))


def fd_check(model, x, y, step=3, eps=3e-3, rtol=3e-2, atol=2e-3, max_params=60):
    """Central differences of the model's own loss (noise fixed by the step) vs its
    analytic gradient (Sequential.loss_and_gradients), on up to max_params parameters
    spread over the weights."""
    res = model.loss_and_gradients(x, y, step=step)
    g = np.concatenate([a.ravel() for a in res["gradients"]]).astype(np.float64)
    ws = model.get_weights()
    sizes = [w.size for w in ws]
    flat = np.concatenate([w.ravel() for w in ws])

    def loss_at(vec):
        parts = np.split(vec, np.cumsum(sizes)[:-1])
        model.set_weights([p.reshape(w.shape) for p, w in zip(parts, ws)])
        return model.loss_and_gradients(x, y, step=step)["loss"]

    idx = np.linspace(0, flat.size - 1, min(max_params, flat.size)).astype(int)
    for i in idx:
        v = flat.copy()
        v[i] = flat[i] + eps
        lp = loss_at(v)
        v[i] = flat[i] - eps
        lm = loss_at(v)
        num = (float(lp) - float(lm)) / (2 * eps)
        assert g[i] == pytest.approx(num, rel=rtol, abs=atol), f"parameter {i}"
    loss_at(flat)


# ------------------------------------------------------------ the source tree
import os as _os

#: the checkout these tests sit in (tests/..)
SOURCE_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))


def source_tree_reason(*relpaths, root=SOURCE_ROOT):
    """Why a test that reads the source tree (README.md, pyproject.toml, setup.py, csrc/,
    fastdrop/*.py) cannot run, or None when it can: the fastdrop under test must be the
    one in ``root`` (not an installed wheel with the tests beside it) and every path must
    exist there."""
    import fastdrop
    pkg = _os.path.realpath(_os.path.dirname(_os.path.abspath(fastdrop.__file__)))
    base = _os.path.realpath(root)
    if _os.path.commonpath([pkg, base]) != base:
        return (f"reads the source tree, but the fastdrop under test ({pkg}) is not the one "
                f"in {base} (an installed wheel)")
    for p in relpaths:
        if not _os.path.exists(_os.path.join(root, p)):
            return f"reads the source tree, but {p} is not in {root}"
    return None


def needs_source_tree(*relpaths, root=SOURCE_ROOT):
    """``@needs_source_tree('pyproject.toml', 'README.md')``: skip with the reason of
    ``source_tree_reason``."""
    reason = source_tree_reason(*relpaths, root=root)
    return pytest.mark.skipif(reason is not None, reason=reason or "")

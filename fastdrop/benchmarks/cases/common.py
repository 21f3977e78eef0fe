"""Pieces several families share: one ``fit`` epoch of a compiled model, a model-level
training row beside PyTorch, and a layer's stage bound outside a model (variables drawn
from their initializers, gradient buffers, an arena for ``batch`` rows)."""
import numpy as np

from .. import peers


def fit_epoch(model, x, y, batch):
    """Compile ``model`` (Adam, sparse categorical cross-entropy); a callable fitting one
    unshuffled epoch of (x, y)."""
    model.compile("adam", "sparse_categorical_crossentropy")

    def run():
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return run


def train_sides(name, model, x, y, batch, torch=None, channels_last=False):
    """{"fastdrop": fit epoch, "torch": the PyTorch twin's epoch, "torch_cl": the same in
    channels-last memory (when ``channels_last``)} on the same (x, y)."""
    cases = {"fastdrop": fit_epoch(model, x, y, batch)}
    if torch is not None:
        cases["torch"] = peers.torch_net_trainer(torch, name, x, y, batch)[0]
        if channels_last:
            cases["torch_cl"] = peers.torch_net_trainer(torch, name, x, y, batch, True)[0]
    return cases


def train_row(ctx, name, cases, n):
    """Measure ``train_sides`` and make the report row (samples/s, best PyTorch layout)."""
    r = ctx.measure(cases, scale=2.0)
    sps = {k: n / v["best"] for k, v in r.items()}
    best_torch = max([v for k, v in sps.items() if k != "fastdrop"], default=None)
    ctx.log(f"train {name}: {sps['fastdrop']:.0f} samples/s (torch {best_torch})")
    return dict(case=f"train {name}", fastdrop_sps=sps["fastdrop"], torch_sps=best_torch,
                vs_torch=None if best_torch is None else sps["fastdrop"] / best_torch)


def bound_stage(layer, in_shape, batch, rng, noise_index=None):
    """(layer, stage): ``layer`` built on ``in_shape`` with initialised variables and zero
    gradients, its stage bound and its buffers allocated for ``batch`` rows."""
    from ...engine import Arena
    layer.build(in_shape)
    for v in layer.variables:
        v.value = v.initializer(v.shape, rng).astype(np.float32)
        setattr(layer, v.name, v.value)
        v.grad = np.zeros(v.shape, np.float32)
        setattr(layer, "d" + v.name, v.grad)
    if noise_index is not None:
        layer.noise_index = noise_index
    stage = layer.make_stage()
    stage.bind(in_shape)
    Arena().allocate([stage], batch)
    return layer, stage

"""Recurrent networks: one training step's forward + backward of an LSTM(128) / GRU(128)
stage on (batch, 28, 28) sequences beside PyTorch's ``nn.LSTM`` / ``nn.GRU`` and the
float64 NumPy reference; model-level training of LSTM and GRU classifiers beside PyTorch,
and the cost of dropout = recurrent_dropout = 0.25."""
import numpy as np

from .. import peers
from .common import bound_stage, fit_epoch, train_row, train_sides

STEPS, FEATURES, UNITS = 28, 28, 128
#: layer-level cases: (cell, layer keyword arguments, gates)
CELLS = {"lstm": ("lstm", {}, 4), "gru": ("gru", {}, 3),
         "lstm-dropout": ("lstm", {"dropout": 0.25, "recurrent_dropout": 0.25}, 4)}


def step_flops(gates, m, T=STEPS, F=FEATURES, U=UNITS):
    """Multiply-adds × 2 of one step: forward input projection and recurrent GEMMs,
    backward dh, dU and dW GEMMs (no dx for a first layer)."""
    fwd = 2 * m * T * F * gates * U + 2 * m * (T - 1) * U * gates * U
    bwd = 2 * m * (T - 1) * U * gates * U * 2 + 2 * m * T * F * gates * U
    return fwd + bwd


def classifier(cell, dropout=0.0, seed=0):
    """Input(28, 28) - LSTM/GRU(128) - Dense(10, softmax)."""
    from ... import layers as L
    from ...models import Sequential
    cls = L.LSTM if cell == "lstm" else L.GRU
    return Sequential([L.Input((STEPS, FEATURES)),
                       cls(UNITS, dropout=dropout, recurrent_dropout=dropout),
                       L.Dense(10, activation="softmax")], seed=seed)


def sequences(n, rng):
    return rng.random((n, STEPS, FEATURES), dtype=np.float32)


def rnn_layer(case, batch, rng):
    """(layer, stage) of a ``CELLS`` case bound for ``batch`` sequences."""
    from ...layers.recurrent import GRU, LSTM
    cell, kw, _ = CELLS[case]
    return bound_stage((LSTM if cell == "lstm" else GRU)(UNITS, **kw), (STEPS, FEATURES),
                       batch, rng, noise_index=1)


def step_data(batch, rng):
    """(x, dy): standard-normal sequences and gradients of the last output."""
    x = rng.standard_normal((batch, STEPS, FEATURES)).astype(np.float32)
    dy = rng.standard_normal((batch, UNITS)).astype(np.float32)
    return x, dy


def rnn_sides(case, layer, stage, x, dy, ref_batch=8, torch=None):
    """{"fastdrop": stage forward + backward (a new noise step each call), "reference":
    the float64 reference on the first ``ref_batch`` sequences, "torch"} (torch only for
    the cases without dropout)."""
    from ...engine import TRAIN, Context
    from ...reference import rnn as R
    step = [0]
    m = x.shape[0]

    def run():
        step[0] += 1
        ctx = Context(TRAIN, m, step=step[0])
        stage.forward(ctx, x)
        stage.backward(ctx, dy, False)

    xs, dys = x[:ref_batch], dy[:ref_batch]

    def ref():
        _, cache = R.rnn_forward(layer.cell, xs, layer.kernel, layer.recurrent_kernel,
                                 layer.bias)
        R.rnn_backward(cache, dys)

    cell, kw, _ = CELLS[case]
    tt = (peers.torch_rnn_step(torch, cell, FEATURES, UNITS, x)
          if torch is not None and not kw else None)
    return {"fastdrop": run, "reference": ref, "torch": tt}


def bench(ctx):
    """Training samples/s of the LSTM and GRU classifiers beside PyTorch, then the LSTM
    with dropout = recurrent_dropout = 0.25 against the same LSTM without."""
    cfg = ctx.cfg
    batch = cfg["batch"]
    n = cfg.get("model_steps", 4) * batch
    seq = sequences(n, ctx.rng)
    y = ctx.rng.integers(0, 10, n).astype(np.int64)
    ctx.threads(ctx.n)
    torch = ctx.torch()
    rows = [train_row(ctx, cell, train_sides(cell, classifier(cell), seq, y, batch, torch), n)
            for cell in ("lstm", "gru")]
    plain = fit_epoch(classifier("lstm"), seq, y, batch)
    drop = fit_epoch(classifier("lstm", 0.25), seq, y, batch)
    r = ctx.measure({"plain": plain, "dropout": drop}, scale=2.0)
    rows.append(dict(case="lstm dropout=recurrent_dropout=0.25 / without",
                     ratio=r["dropout"]["best"] / r["plain"]["best"],
                     fastdrop_sps=n / r["dropout"]["best"]))
    ctx.log(f"lstm dropout cost: {rows[-1]['ratio']:.2f}x")
    return rows

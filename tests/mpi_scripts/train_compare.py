"""Train small MLP / CNN / LSTM models (with dropout) 2 epochs with SGD + momentum and write
their weights; run under ``mpiexec -n P`` with ``--dp`` (data-parallel) or alone.

usage: train_compare.py OUT.npz [--dp] [--compression fp16|bf16] [--batch B] [--lr LR]
       [--kinds ...]
       [--files DIR] (checkpoint + CSV log + rank write audit in DIR)
"""
import argparse
import json
import os
import sys

import numpy as np

import fastdrop
from fastdrop.callbacks import CSVLogger, ModelCheckpoint
from fastdrop.layers import (LSTM, Conv2D, Dense, Dropout, Embedding, Flatten, Input,
                             MaxPooling2D)
from fastdrop.models import Sequential
from fastdrop.optimizers import SGD
from fastdrop.regularizers import L2


def build(kind):
    if kind == "mlp":
        layers = [Input((20,)), Dropout(0.2), Dense(32, activation="relu"), Dropout(0.5),
                  Dense(16, activation="relu", kernel_regularizer=L2(1e-3)), Dropout(0.3),
                  Dense(5, activation="softmax")]
    elif kind == "cnn":
        layers = [Input((8, 8, 1)), Conv2D(4, 3, activation="relu"), Dropout(0.3),
                  MaxPooling2D(2), Flatten(), Dropout(0.4), Dense(5, activation="softmax")]
    elif kind in ("seq", "seqgen"):   # per-step tagging under a padding mask
        layers = [Input((7,), dtype="int32"), Embedding(12, 6, mask_zero=True),
                  LSTM(8, dropout=0.2, recurrent_dropout=0.2, return_sequences=True),
                  Dense(5, activation="softmax")]
    else:
        layers = [Input((6, 5)), LSTM(8, dropout=0.2, recurrent_dropout=0.2), Dropout(0.3),
                  Dense(5, activation="softmax")]
    return Sequential(layers, seed=1234)


def data(kind, n=90):
    rng = np.random.default_rng(7)
    if kind in ("seq", "seqgen"):   # 1..7 valid tokens, then padding: shares differ
        lens = rng.integers(1, 8, n)
        x = rng.integers(1, 12, (n, 7))
        x[np.arange(7)[None, :] >= lens[:, None]] = 0
        return x.astype(np.int32), rng.integers(0, 5, (n, 7))
    shape = {"mlp": (20,), "cnn": (8, 8, 1), "lstm": (6, 5)}[kind]
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.integers(0, 5, n)
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dp", action="store_true")
    ap.add_argument("--compression", default=None)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--kinds", nargs="+", default=["mlp", "cnn", "lstm", "seq", "seqgen"])
    ap.add_argument("--files", default=None)
    ap.add_argument("--overlap", action="store_true")
    a = ap.parse_args()
    fastdrop.set_num_threads(1)
    writes = []
    rank = 0
    if a.dp:
        import fastdrop.distributed as dist
        info = dist.initialize(num_threads=1)
        rank = info.rank
        dp = dist.DataParallel(compression=a.compression, debug=True, overlap=a.overlap)
        dist.set_distribution(dp)
        if a.files:
            root = os.path.abspath(a.files)

            def audit(event, args):
                if event == "open" and isinstance(args[0], str) and \
                        os.path.abspath(args[0]).startswith(root) and \
                        (args[1] is None or any(c in str(args[1]) for c in "wax+")):
                    writes.append(os.path.basename(args[0]))
            sys.addaudithook(audit)
    res = {}
    for kind in a.kinds:
        x, y = data(kind)
        model = build(kind)
        model.compile(optimizer=SGD(learning_rate=a.lr, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        cbs = []
        if a.files:
            cbs = [ModelCheckpoint(os.path.join(a.files, f"{kind}-ckpt.fdm")),
                   CSVLogger(os.path.join(a.files, f"{kind}-log.csv"))]
        extra = {"mlp": {"class_weight": {0: 2.0, 1: 0.5}},   # weighted losses
                 "cnn": {"shuffle": False}}.get(kind, {})      # the unshuffled slices
        if kind == "seqgen":            # a PyDataset: each rank reads the same batches
            from fastdrop.utils import PyDataset

            class Batches(PyDataset):
                def __len__(self):
                    return -(-len(x) // a.batch)

                def __getitem__(self, i):
                    s_ = slice(i * a.batch, (i + 1) * a.batch)
                    return x[s_], y[s_]
            hist = model.fit(Batches(), epochs=2, verbose=0, callbacks=cbs,
                             validation_data=(x[:31], y[:31]))
        else:
            hist = model.fit(x, y, batch_size=a.batch, epochs=2, verbose=0, callbacks=cbs,
                             validation_data=(x[:31], y[:31]), **extra)
        for i, wt in enumerate(model.get_weights()):
            res[f"{kind}/{i}"] = wt
        for k, v in hist.history.items():
            res[f"{kind}/hist/{k}"] = np.array(v)
        res[f"{kind}/eval"] = np.array(model.evaluate(x, y, verbose=0))
        res[f"{kind}/pred"] = model.predict(x[:37])
        res[f"{kind}/mc"] = model.predict(x[:37], mc_samples=4, seed=5)[0]
    if a.dp and a.files:
        import fastdrop.distributed as dist
        from fastdrop.distributed import _comm
        allw = _comm.world().gather(sorted(set(writes)), root=0)
        if rank == 0:
            with open(os.path.join(a.files, "..", "writes.json"), "w") as f:
                json.dump(allw, f)
    if rank == 0:
        np.savez(a.out, **res)


if __name__ == "__main__":
    main()

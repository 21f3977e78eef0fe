"""A BatchNorm + Dropout CNN trained data-parallel (per-rank batch statistics) with the
weight checksum on: every rank ends with the same weights and moving statistics; then
save (rank 0) and ``fastdrop.distributed.load_model`` (read on rank 0, broadcast).
usage: batchnorm.py OUT.npz"""
import os
import sys

import numpy as np

import fastdrop.distributed as dist
from fastdrop.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input,
                             MaxPooling2D)
from fastdrop.models import Sequential

info = dist.initialize(num_threads=1)
with dist.DataParallel(debug=True).scope():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    model = Sequential([Input((8, 8, 2)), Conv2D(4, 3), BatchNormalization(),
                        MaxPooling2D(2), Flatten(), Dropout(0.3),
                        Dense(3, activation="softmax")], seed=2)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    w = model.get_weights()
    allw = dist._comm.world().gather([a.tobytes() for a in w], root=0)
    path = os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "bn.fdm")
    model.save(path)                       # rank 0 writes, every rank returns after it
    loaded = dist.load_model(path)
    for a, b in zip(loaded.get_weights(), w):
        assert np.array_equal(a, b), "load_model differs"
    try:
        dist.load_model(path + ".missing")
    except (OSError, ValueError, RuntimeError) as e:
        print(f"rank {info.rank} load error: {type(e).__name__}", flush=True)
    if info.rank == 0:
        assert all(a == allw[0] for a in allw), "ranks differ"
        np.savez(sys.argv[1], *w)
        print("ok")

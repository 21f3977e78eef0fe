"""Faults under ``mpiexec -n 2``: usage faults.py MODE DIR

raise     rank 1 raises in epoch 2 (rank 0 has written the epoch-1 checkpoint)
kill      rank 1 kills itself (SIGKILL) in epoch 2
hang      rank 1 stops answering in epoch 2 (the others abort after FASTDROP_MPI_TIMEOUT)
mismatch  rank 1 passes fewer samples: fit raises ValueError on every rank (printed)
"""
import os
import signal
import sys
import time

import numpy as np

import fastdrop
import fastdrop.distributed as dist
from fastdrop.callbacks import LambdaCallback, ModelCheckpoint
from fastdrop.layers import Dense, Dropout, Input
from fastdrop.models import Sequential


def main():
    mode, out = sys.argv[1], sys.argv[2]
    info = dist.initialize(num_threads=1)
    dp = dist.DataParallel()
    rng = np.random.default_rng(0)
    n = 64 if (mode == "mismatch" and info.rank == 1) else 80
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = rng.integers(0, 3, n)
    with dp.scope():
        model = Sequential([Input((10,)), Dense(16, activation="relu"), Dropout(0.5),
                            Dense(3, activation="softmax")], seed=3)
        model.compile("sgd", "sparse_categorical_crossentropy")

        def on_batch(batch, logs):
            if info.rank == 1 and model._step == 7:      # epoch 2 (4 steps per epoch)
                if mode == "raise":
                    raise RuntimeError("rank 1 fails on purpose")
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if mode == "hang":
                    time.sleep(120)

        cbs = [ModelCheckpoint(os.path.join(out, "ckpt.fdm")),
               LambdaCallback(on_train_batch_begin=on_batch)]
        try:
            model.fit(x, y, batch_size=20, epochs=3, verbose=0, callbacks=cbs)
        except ValueError as e:
            print(f"rank {info.rank}: ValueError: {e}", flush=True)
            return 0
    print(f"rank {info.rank}: finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

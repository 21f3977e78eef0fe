"""Accuracy runs for the issue notes (full Fashion-MNIST; not part of the test suite).

    python tools/accuracy.py convnet [epochs]   # Keras mnist_convnet, Adam, batch 128
    python tools/accuracy.py bncnn   [epochs]   # 2 double-conv blocks + BatchNorm + SpatialDropout2D
    python tools/accuracy.py lstm    [epochs]   # Input((28, 28)) -> LSTM(128) -> Dense(10)

Prints the test accuracy and training samples/s after every epoch and the mean of the
last 3 epochs.
"""
import sys
import time

import numpy as np

import fastdrop
from fastdrop.callbacks import Callback
from fastdrop.datasets import fashion_mnist
from fastdrop.layers import (LSTM, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                             Input, MaxPooling2D, SpatialDropout2D)
from fastdrop.models import Sequential

kind = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else {"convnet": 12, "bncnn": 20, "lstm": 8}[kind]
(xtr, ytr), (xte, yte) = fashion_mnist(subset="full")
xtr = (xtr / 255.0).astype(np.float32)
xte = (xte / 255.0).astype(np.float32)
if kind == "lstm":
    xtr, xte = xtr.reshape(-1, 28, 28), xte.reshape(-1, 28, 28)
    model = Sequential([Input((28, 28)), LSTM(128), Dense(10, activation="softmax")], seed=0)
else:
    xtr, xte = xtr.reshape(-1, 28, 28, 1), xte.reshape(-1, 28, 28, 1)
    if kind == "convnet":
        model = Sequential([Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                            Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(),
                            Dropout(0.5), Dense(10, activation="softmax")], seed=0)
    else:
        def block(f):
            return [Conv2D(f, 3, padding="same", use_bias=False), BatchNormalization(),
                    fastdrop.layers.Activation("relu"),
                    Conv2D(f, 3, padding="same", use_bias=False), BatchNormalization(),
                    fastdrop.layers.Activation("relu")]
        model = Sequential([Input((28, 28, 1))] + block(32) + [MaxPooling2D(2),
                           SpatialDropout2D(0.1)] + block(64) + [MaxPooling2D(2),
                           SpatialDropout2D(0.2), Flatten(), Dense(256, activation="relu"),
                           Dropout(0.5), Dense(10, activation="softmax")], seed=0)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
accs = []


class Report(Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self.t0
        acc = model.evaluate(xte, yte, batch_size=500, verbose=0)[1]
        accs.append(acc)
        print(f"epoch {epoch + 1}: train loss {logs['loss']:.4f}  test accuracy {acc:.4f}  "
              f"({len(xtr) / dt:.0f} samples/s, {dt:.1f} s)", flush=True)


t0 = time.perf_counter()
model.fit(xtr, ytr, batch_size=128, epochs=epochs, verbose=0, callbacks=[Report()])
print(f"{kind}: mean of the last 3 epochs {np.mean(accs[-3:]):.4f}; "
      f"{model.count_params():,} params; {time.perf_counter() - t0:.0f} s in all; "
      f"threads {fastdrop.get_num_threads()}", flush=True)

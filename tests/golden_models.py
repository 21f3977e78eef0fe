"""Seeded MLP runs whose results are locked by tests/data/golden_mlp.npz (recorded with the
v1 MLP engine, before Engine v2): the same seed must give the same weights bit for bit on
the same kernels.  Shared by tests/test_golden.py and tools/make_golden.py."""
import hashlib

import numpy as np

import fastdrop
from fastdrop import _core
from fastdrop.layers import (AlphaDropout, Dense, Dropout, GaussianDropout, Input)
from fastdrop.models import Sequential
from fastdrop.regularizers import l2
from fastdrop.constraints import MaxNorm


def data(n=300, d=20, c=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, c))
    y = (x @ w).argmax(1)
    return x, y


def _models():
    return {
        "relu_dropout_adam": (lambda: Sequential([
            Input((20,)), Dense(32, activation="relu"), Dropout(0.3),
            Dense(32, activation="relu"), Dropout(0.5), Dense(5, activation="softmax")],
            seed=11), "adam", "sparse_categorical_crossentropy"),
        "input_dropout_sgd": (lambda: Sequential([
            Input((20,)), Dropout(0.2), Dense(16, activation="relu",
                                                   kernel_regularizer=l2(1e-3),
                                                   kernel_constraint=MaxNorm(2.0)),
            Dense(5, activation="softmax")], seed=12),
            fastdrop.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
            "sparse_categorical_crossentropy"),
        "selu_alpha_gauss": (lambda: Sequential([
            Dense(24, activation="selu", kernel_initializer="lecun_normal", input_dim=20),
            AlphaDropout(0.1), Dense(24, activation="relu"), GaussianDropout(0.2),
            Dense(5, activation="softmax")], seed=13), "adamw",
            "categorical_crossentropy"),
        "noise_shape_dropconnect_mse": (lambda: Sequential([
            Dense(16, activation="relu", input_dim=20, drop_connect=0.2),
            Dropout(0.3, noise_shape=(None, 1)), Dense(16, activation="relu"),
            Dropout(0.25, noise_shape=(1, 16)), Dense(5)], seed=14), "adam", "mse"),
    }


CASES = tuple(_models())


def run(name, steps_epochs=3):
    make, opt, loss = _models()[name]
    model = make()
    model.compile(optimizer=opt, loss=loss)
    x, y = data()
    if loss == "categorical_crossentropy":
        y = np.eye(5, dtype=np.float32)[y]
    elif loss == "mse":
        y = np.eye(5, dtype=np.float32)[y]
    model.fit(x, y, batch_size=64, epochs=steps_epochs, verbose=0)
    params = np.concatenate([w.ravel() for w in model.get_weights()])
    return params, model.predict(x[:50])


def saved_model():
    model = Sequential([Dense(16, activation="relu", input_dim=20), Dropout(0.3),
                        Dense(5, activation="softmax")], seed=21)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = data()
    model.fit(x, y, batch_size=50, epochs=2, verbose=0)
    return model, x[:40]


def fingerprint():
    """Identifies the kernels' summation order: ISA path + a GEMM result hash."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((37, 900)).astype(np.float32)
    b = rng.standard_normal((900, 70)).astype(np.float32)
    c = np.empty((37, 70), np.float32)
    _core.gemm(a, b, c, False, False, 1.0, 0.0)
    return _core.isa() + ":" + hashlib.sha256(c.tobytes()).hexdigest()[:16]

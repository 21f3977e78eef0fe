"""End-to-end: the embedded Fashion-MNIST subset trains to the CI accuracy bar, and the
command line works."""
import subprocess
import sys

import numpy as np
import pytest

from fastdrop import datasets
from fastdrop.layers import Dense, Dropout
from fastdrop.models import Sequential
from fastdrop.optimizers import Adam


def test_subset_reaches_84_percent():
    """784-512-512-10 with dropout 0.3 and a cosine learning-rate decay on the 7,150
    embedded training images, 20 epochs: the issue's CI bar is >= 84% test accuracy on the
    subset's 1,000 test images (measured 85.5-86.1% over seeds 0-2)."""
    import math

    from fastdrop.callbacks import LearningRateScheduler
    (xtr, ytr), (xte, yte) = datasets.fashion_mnist(subset="small", flatten=True)
    xtr = xtr.astype(np.float32) / 255
    xte = xte.astype(np.float32) / 255
    model = Sequential([Dense(512, activation="relu", input_dim=784,
                              kernel_initializer="he_uniform"), Dropout(0.3),
                        Dense(512, activation="relu", kernel_initializer="he_uniform"),
                        Dropout(0.3), Dense(10, activation="softmax")], seed=0)
    model.compile(Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cosine = LearningRateScheduler(lambda e, lr: 1e-3 * 0.5 * (1 + math.cos(math.pi * e / 20)))
    model.fit(xtr, ytr, batch_size=128, epochs=20, verbose=0, callbacks=[cosine])
    loss, acc = model.evaluate(xte, yte)
    assert acc >= 0.84, f"test accuracy {acc:.4f} below the 84% bar"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastdrop", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_cli_info(tmp_path):
    r = run_cli("info", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "kernel path" in r.stdout and "OpenMP" in r.stdout


def test_cli_train_small_and_save(tmp_path):
    path = tmp_path / "m.fdm"
    r = run_cli("train", "--subset", "small", "--layers", "64", "--epochs", "1",
                "--save", str(path), "--verbose", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and "samples/s" in r.stdout
    import fastdrop
    model = fastdrop.load_model(path)
    assert model.count_params() == 784 * 64 + 64 + 64 * 10 + 10


def test_cli_rejects_bad_flags(tmp_path):
    r = run_cli("train", "--layers", "0,5", cwd=tmp_path)
    assert r.returncode != 0 and "layer sizes must be positive" in r.stderr


def test_cli_notice_when_full_set_missing(monkeypatch, capsys):
    """Without the full set the CLI trains on the embedded subset and says, on one line,
    how to get the full set (the search is patched: the Debian files may be installed)."""
    from fastdrop import cli

    monkeypatch.setattr(datasets, "find_fashion_mnist", lambda *a, **k: None)
    assert cli.main(["train", "--layers", "16", "--epochs", "1", "--verbose", "0"]) == 0
    out, err = capsys.readouterr()
    notice = [line for line in err.splitlines() if "embedded subset" in line]
    assert len(notice) == 1 and "dataset-fashion-mnist" in notice[0]
    assert "7150 training / 1000 test images" in out and "test accuracy" in out

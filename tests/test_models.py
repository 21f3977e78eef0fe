"""The Sequential engine: Keras behaviour, gradients against finite differences of an
independent NumPy model, reproducibility, thread invariance, saving, callbacks, errors."""
import os

import numpy as np
import pytest

import fastdrop
from fastdrop import reference as R
from fastdrop.callbacks import (Callback, EarlyStopping, LearningRateScheduler,
                                ModelCheckpoint, ReduceLROnPlateau)
from fastdrop.constraints import MaxNorm
from fastdrop.layers import Activation, Dense, Dropout, Flatten, ReLU
from fastdrop.models import NonFiniteLossError, Sequential, load_model
from fastdrop.optimizers import SGD, Adam, AdamW
from fastdrop.regularizers import l2
from fastdrop.utils import to_categorical


from helpers import blobs, mlp


# ---------------------------------------------------------------- keras usage
def test_keras_example_runs_unchanged():
    x, y = blobs(n=1000, d=784 // 8, classes=10)
    x = np.repeat(x, 8, axis=1)   # 784 features
    y_train = to_categorical(y, 10)
    x_train, x_val, y_val = x[:800], x[800:], y_train[800:]
    y_train = y_train[:800]
    model = Sequential()
    model.add(Dense(128, input_dim=784, activation='relu'))
    model.add(Dropout(0.5))
    model.add(Dense(64, activation='relu'))
    model.add(Dropout(0.5))
    model.add(Dense(10, activation='softmax'))
    model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
    hist = model.fit(x_train, y_train, batch_size=128, epochs=10,
                     validation_data=(x_val, y_val), verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 10
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["val_accuracy"][-1] > 0.9
    p = model.predict(x_val)
    assert p.shape == (200, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    loss, acc = model.evaluate(x_val, y_val)
    assert acc == pytest.approx(hist.history["val_accuracy"][-1])
    assert loss == pytest.approx(hist.history["val_loss"][-1], rel=1e-6)


def test_get_set_weights_keras_order_and_count():
    model = mlp()
    model.build()
    w = model.get_weights()
    assert [a.shape for a in w] == [(20, 32), (32,), (32, 16), (16,), (16, 4), (4,)]
    assert model.count_params() == sum(a.size for a in w)
    w2 = [a + 1 for a in w]
    model.set_weights(w2)
    for a, b in zip(model.get_weights(), w2):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"weights\[1\] .*must have shape"):
        model.set_weights([w[0], w[0]] + w[2:])
    with pytest.raises(ValueError, match="list of 6 arrays"):
        model.set_weights(w[:3])
    text = model.summary(print_fn=None)
    assert "Total params" in text and f"{model.count_params():,}" in text


def test_inputs_are_converted_once():
    x, y = blobs(n=64)
    model = mlp(rate=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    # lists, float64 and non-contiguous inputs give the same results as float32 C arrays
    p32 = model.predict(x)
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), p32)
    np.testing.assert_array_equal(model.predict(np.asfortranarray(x)), p32)
    np.testing.assert_array_equal(model.predict(x.tolist()), p32)


def test_predict_is_deterministic_inference_mode():
    x, _ = blobs(n=50)
    model = mlp(rate=0.5)
    model.build()
    np.testing.assert_array_equal(model.predict(x), model.predict(x))
    # batch size does not change results
    np.testing.assert_array_equal(model.predict(x, batch_size=7), model.predict(x))


def test_learns_with_every_optimizer():
    x, y = blobs()
    for opt in ("sgd", SGD(0.05, momentum=0.9, nesterov=True), "adam", AdamW(3e-3)):
        model = mlp(rate=0.2)
        model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
        assert h.history["accuracy"][-1] > 0.9, opt


# ----------------------------------------------------------- gradient checks
@pytest.mark.parametrize("rate", [0.0, 0.4])
def test_gradients_match_finite_differences(rate):
    """fastdrop's backward pass vs central finite differences (float64) of an independent
    NumPy model holding the same dropout mask fixed."""
    x, y = blobs(n=16, d=7, classes=3, seed=1)
    model = mlp(d=7, classes=3, hidden=(9, 5), rate=rate, seed=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    res = model.loss_and_gradients(x, y, step=5)
    grads = res["gradients"]
    drops = [l.name for l in model.layers if isinstance(l, Dropout)]
    keep = [res["masks"].get(n) for n in drops] if rate else [None, None]
    assert all(k is not None for k in keep) or not rate
    weights = [w.astype(np.float64) for w in model.get_weights()]
    relu = [True, True]
    rates = [rate, rate]
    ref_loss, ref_grads = R.mlp_loss_and_grads(weights, x, y, relu, keep, rates)
    assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
    eps = 1e-6
    for wi, w in enumerate(weights):
        flat = w.reshape(-1)
        num = np.empty_like(flat)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            lp, _ = R.mlp_loss_and_grads(weights, x, y, relu, keep, rates)
            flat[j] = old - eps
            lm, _ = R.mlp_loss_and_grads(weights, x, y, relu, keep, rates)
            flat[j] = old
            num[j] = (lp - lm) / (2 * eps)
        # float32 kernels vs float64 differences: absolute 2e-5 + relative 1e-3
        np.testing.assert_allclose(grads[wi].reshape(-1), num, rtol=1e-3, atol=2e-5,
                                   err_msg=f"weights[{wi}]")
        np.testing.assert_allclose(ref_grads[wi].reshape(-1), num, rtol=1e-5, atol=1e-8)


def test_dropout_masks_differ_across_steps_and_layers():
    x, y = blobs(n=32, d=64, classes=4)
    model = mlp(d=64, hidden=(64, 64), rate=0.5)
    model.compile("sgd", "sparse_categorical_crossentropy")
    d1, d2 = [l.name for l in model.layers if isinstance(l, Dropout)]
    m0 = model.loss_and_gradients(x, y, step=0)["masks"]
    m1 = model.loss_and_gradients(x, y, step=1)["masks"]
    a0, b0, a1 = m0[d1], m0[d2], m1[d1]
    assert not np.array_equal(a0, b0)
    assert not np.array_equal(a0, a1)
    kept = a0.mean()
    assert abs(kept - 0.5) < 5 * np.sqrt(0.25 / (32 * 64))


def test_regularizer_adds_penalty_and_gradient():
    x, y = blobs(n=16, d=7, classes=3, seed=2)
    lam = 0.01
    model = Sequential([Dense(5, activation="relu", input_dim=7, kernel_regularizer=l2(lam)),
                        Dense(3, activation="softmax")], seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    g = model.loss_and_gradients(x, y, step=0)["gradients"]
    w = model.get_weights()
    _, ref = R.mlp_loss_and_grads(w, x, y, [True])
    np.testing.assert_allclose(g[0],
                               ref[0] + 2 * lam * w[0].astype(np.float64), rtol=1e-4, atol=1e-6)
    assert model.evaluate(x, y) == pytest.approx(
        R.mlp_loss_and_grads(w, x, y, [True])[0] + lam * float((w[0].astype(np.float64) ** 2).sum()),
        rel=1e-5)


def test_maxnorm_constraint_holds_after_fit():
    x, y = blobs()
    model = mlp(kernel_constraint=MaxNorm(0.5))
    model.compile(SGD(0.5), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    for layer in model.layers[:-1]:
        if isinstance(layer, Dense):
            norms = np.sqrt((layer.kernel.astype(np.float64) ** 2).sum(0))
            assert norms.max() <= 0.5 + 1e-5


# -------------------------------------------------------- reproducibility
def _train(seed, threads=None, epochs=2):
    if threads:
        fastdrop.set_num_threads(threads)
    x, y = blobs(n=300, d=50)
    model = mlp(d=50, hidden=(257, 131), rate=0.5, seed=seed)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model.get_weights(), h.history


def test_same_seed_reproducible_and_seeds_differ():
    w1, h1 = _train(7)
    w2, h2 = _train(7)
    w3, _ = _train(8)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2
    assert not np.array_equal(w1[0], w3[0])


def test_training_bitwise_identical_for_1_and_2_threads(threads):
    w1, h1 = _train(5, threads=1)
    w2, h2 = _train(5, threads=2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert h1 == h2


def test_set_seed_makes_unseeded_models_reproducible():
    fastdrop.set_seed(123)
    a = Sequential([Dense(4, input_dim=3), Dropout(0.5), Dense(2, activation="softmax")])
    fastdrop.set_seed(123)
    b = Sequential([Dense(4, input_dim=3), Dropout(0.5), Dense(2, activation="softmax")])
    a.build(), b.build()
    assert a.seed == b.seed
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------------- saving
def test_save_load_roundtrip_and_resume_is_exact(tmp_path):
    x, y = blobs(n=256, d=30)
    full = mlp(d=30, seed=11)
    full.compile(Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    full.fit(x, y, epochs=2, batch_size=32, verbose=0)

    part = mlp(d=30, seed=11)
    part.compile(Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    part.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "model.fdm"
    part.save(path)
    resumed = load_model(path)
    np.testing.assert_array_equal(resumed.predict(x), part.predict(x))
    assert resumed.optimizer.get_config() == part.optimizer.get_config()
    resumed.fit(x, y, epochs=2, initial_epoch=1, batch_size=32, verbose=0)
    for a, b in zip(resumed.get_weights(), full.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_is_atomic_when_write_fails(tmp_path, monkeypatch):
    model = mlp()
    model.build()
    path = tmp_path / "m.fdm"
    model.save(path)
    before = path.read_bytes()
    model.set_weights([w + 1 for w in model.get_weights()])

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.fdm"]   # no temp file left


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "empty", "npz-foreign"])
def test_load_rejects_corrupt_files(tmp_path, damage):
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.build()
    path = tmp_path / "m.fdm"
    model.save(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(1000))
    elif damage == "flip":
        b = bytearray(data)
        b[len(b) // 3] ^= 0xFF
        path.write_bytes(bytes(b))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path = tmp_path / "foreign.npz"
        np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a valid fastdrop model file"):
        load_model(path)


def test_load_missing_file():
    with pytest.raises(FileNotFoundError):
        load_model("/nonexistent/model.fdm")


# ---------------------------------------------------------------- callbacks
def test_early_stopping_restores_best_weights():
    x, y = blobs(n=200)
    model = mlp()
    model.compile(Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], self.model.get_weights()))

    es = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=200, validation_split=0.25, callbacks=[Spy(), es], verbose=0)
    assert len(h.epoch) < 200
    best = min(range(len(seen)), key=lambda i: seen[i][0])
    assert len(h.epoch) == best + 3
    for a, b in zip(model.get_weights(), seen[best][1]):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_best_only(tmp_path):
    x, y = blobs(n=200)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "best.fdm"
    model.fit(x, y, epochs=3, validation_split=0.2, verbose=0,
              callbacks=[ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True)])
    loaded = load_model(path)
    assert loaded.count_params() == model.count_params()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "e{epoch}.fdm"))])
    assert (tmp_path / "e1.fdm").exists() and (tmp_path / "e2.fdm").exists()


def test_lr_scheduler_and_reduce_on_plateau():
    x, y = blobs(n=100)
    model = mlp()
    model.compile(SGD(0.1), "sparse_categorical_crossentropy")
    h = model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    model.compile(SGD(0.1), "sparse_categorical_crossentropy")
    rl = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[rl])
    assert model.optimizer.learning_rate < 0.1


def test_progress_output(capsys):
    x, y = blobs(n=100)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "samples/s" in out and "accuracy" in out
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------- errors
def test_non_finite_loss_stops_with_epoch_and_step():
    x, y = blobs(n=256)
    x *= 1e6
    model = mlp(rate=0)
    model.compile(SGD(1e6), "sparse_categorical_crossentropy")
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


@pytest.mark.parametrize("call,exc,match", [
    (lambda m, x, y: m.fit(x, y[:-1]), ValueError, "samples but x has"),
    (lambda m, x, y: m.fit(x[:, :-1], y), ValueError, "per-sample shape"),
    (lambda m, x, y: m.fit(x, y + 4), ValueError, r"labels must be in \[0, 4\)"),
    (lambda m, x, y: m.fit(x, y + 0.5), ValueError, "integer class labels"),
    (lambda m, x, y: m.fit(x, y.astype(str)), TypeError, "integer class labels"),
    (lambda m, x, y: m.fit(np.where(x > 1, np.nan, x), y), ValueError, "NaN or infinite"),
    (lambda m, x, y: m.fit(x[:0], y[:0]), ValueError, "empty"),
    (lambda m, x, y: m.fit(x, y, batch_size=0), ValueError, "batch_size must be >= 1"),
    (lambda m, x, y: m.fit(x, y, batch_size=2.5), TypeError, "batch_size must be an integer"),
    (lambda m, x, y: m.fit(x, y, epochs=-1), ValueError, "epochs"),
    (lambda m, x, y: m.fit(x, y, validation_split=1.5), ValueError, "validation_split"),
    (lambda m, x, y: m.fit(x[0], y), ValueError, "must be 2-D"),
    (lambda m, x, y: m.fit(x, to_categorical(y)), ValueError, "integer class labels of shape"),
    (lambda m, x, y: m.predict(x, batch_size=-3), ValueError, "batch_size"),
])
def test_bad_fit_input(call, exc, match):
    x, y = blobs(n=40)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(exc, match=match):
        call(model, x, y)


def test_fit_before_compile_and_predict_unbuilt():
    x, y = blobs(n=10)
    with pytest.raises(RuntimeError, match="compiled"):
        mlp().fit(x, y)
    # an unbuilt model is built from the data on first use, as in Keras
    assert Sequential([Dense(3), Dense(2, activation="softmax")]).predict(x).shape == (10, 2)


def test_bad_model_configuration():
    with pytest.raises(ValueError, match="rate must be"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="units must be"):
        Dense(0)
    with pytest.raises(ValueError, match="activation must be"):
        Dense(3, activation="no_such_activation")
    with pytest.raises(ValueError, match="kernel_initializer"):
        Dense(3, kernel_initializer="magic")
    with pytest.raises(ValueError, match="optimizer must be"):
        mlp().compile("lion", "mse")
    with pytest.raises(ValueError, match="loss must be"):
        mlp().compile("adam", "hinge")
    m = Sequential([Dense(3, input_dim=4), Dense(2)])
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="needs a final softmax"):
        m.fit(np.ones((4, 4)), np.zeros(4, int))


def test_activation_and_relu_layers_equal_fused_form():
    x, y = blobs(n=64, d=10)
    a = Sequential([Dense(8, activation="relu", input_dim=10), Dropout(0.3),
                    Dense(4, activation="softmax")], seed=4)
    b = Sequential([Dense(8, input_dim=10), ReLU(), Dropout(0.3), Dense(4),
                    Activation("softmax")], seed=4)
    c = Sequential([Flatten(input_shape=(10,)), Dense(8, input_dim=10), Activation("relu"),
                    Dropout(0.3), Dense(4, activation="softmax")], seed=4)
    ws = []
    for m in (a, b, c):
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(x, y, epochs=2, verbose=0)
        ws.append(m.get_weights())
    for w in ws[1:]:
        for u, v in zip(ws[0], w):
            np.testing.assert_array_equal(u, v)


def test_input_dropout_and_mse_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 2))).astype(np.float32)
    model = Sequential([Dropout(0.1), Dense(32, activation="relu", input_dim=5), Dense(2)],
                       seed=1)
    model.compile(Adam(1e-2), "mse")
    h = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.2 * h.history["loss"][0]
    assert model.evaluate(x, y) == pytest.approx(
        float(((model.predict(x).astype(np.float64) - y) ** 2).mean()), rel=1e-5)


# ----------------------------------------------------------- MC dropout
def test_mc_dropout_matches_explicit_passes_statistics():
    from fastdrop import uncertainty as U
    x, y = blobs(n=300, d=20)
    model = mlp(rate=0.5, seed=2)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, verbose=0)
    mean, std = model.predict(x, mc_samples=64, seed=1)
    mean2, std2 = model.predict(x, mc_samples=64, seed=1)
    np.testing.assert_array_equal(mean, mean2)          # reproducible with a seed
    assert mean.shape == std.shape == (300, 4)
    np.testing.assert_allclose(mean.sum(1), 1, atol=1e-5)
    assert (std > 0).mean() > 0.5                       # dropout really was on
    det = model.predict(x)
    # mean prediction is close to the deterministic (weight-scaling) prediction
    assert np.abs(mean - det).mean() < 0.1
    acc_mc = (mean.argmax(1) == y).mean()
    acc_det = (det.argmax(1) == y).mean()
    assert acc_mc >= acc_det - 0.02
    r = U.mc_predict(model, x, mc_samples=32, seed=3)
    assert np.all(r.mutual_information >= 0)
    assert np.all(r.predictive_entropy <= np.log(4) + 1e-9)
    np.testing.assert_allclose(r.predictive_entropy, U.predictive_entropy(r.mean), rtol=1e-5)


def test_mc_dropout_uses_dropout_layers_like_training_forward():
    """Each MC pass is a training-mode forward pass: check one pass (T=1) against the
    NumPy model with the mask the C generator produced for that pass' seed."""
    x, _ = blobs(n=5, d=6)
    model = Sequential([Dense(7, activation="relu", input_dim=6), Dropout(0.5),
                        Dense(3, activation="softmax")], seed=0)
    model.build()
    mean, std = model.predict(x, mc_samples=1, seed=9)
    assert np.all(std == 0)
    from fastdrop import random as fr
    # pass 0 of the dropout layer (noise index 1), samples from global index 0
    keep = np.unpackbits(fastdrop.kernels.dropout_mask(5 * 7, 0.5, fr.derive(9, fr.KEY_MC, 1, 0)),
                         count=35, bitorder="little").reshape(5, 7).astype(bool)
    w = [a.astype(np.float64) for a in model.get_weights()]
    h = np.maximum(x @ w[0] + w[1], 0) * keep * 2.0
    ref = R.softmax(h @ w[2] + w[3])
    np.testing.assert_allclose(mean, ref, rtol=1e-5, atol=1e-6)


def test_mc_dropout_bad_args():
    model = mlp()
    model.build()
    with pytest.raises(ValueError, match="mc_samples"):
        model.predict(np.ones((2, 20)), mc_samples=0)


def test_fused_backward_bitwise_equals_unfused():
    """The fused Dense backward (ReLU sign / dropout mask + bias column sums in one pass)
    equals the separate kernels bit for bit."""
    from fastdrop import _core
    rng = np.random.default_rng(0)
    g = rng.standard_normal((200, 300)).astype(np.float32)
    h = np.maximum(rng.standard_normal((200, 300)), 0).astype(np.float32)
    mask = rng.integers(0, 256, (200 * 300 + 7) // 8).astype(np.uint8)
    for relu, m in ((True, None), (False, mask)):
        dz, db = np.empty_like(g), np.empty(300, np.float32)
        _core.dense_backward_act(g, h, m, 2.0, relu, dz, db)
        ref = np.empty_like(g)
        if relu:
            _core.relu_dropout_backward(g.reshape(-1), h.reshape(-1), ref.reshape(-1), 2.0)
        else:
            _core.dropout_apply(g.reshape(-1), m, ref.reshape(-1), 2.0)
        rdb = np.empty(300, np.float32)
        _core.colsum(ref, rdb)
        np.testing.assert_array_equal(dz, ref)
        np.testing.assert_array_equal(db, rdb)
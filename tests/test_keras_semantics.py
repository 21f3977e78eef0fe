"""Keras 3 semantics off the beaten path (issue 17): N-D outputs (a loss head per step),
per-step targets and sample weights, the output mask in the loss and metrics, 'accuracy'
resolved from the shapes, metrics unweighted and weighted_metrics weighted, a
non-finite step never applied, and ``model(x, training=True)`` moving BatchNorm's
statistics.

Oracles: NumPy formulas written from Keras's source (``keras/src/losses/loss.py``
reduce_weighted_values/apply_mask, ``keras/src/metrics/reduction_metrics.py``,
``keras/src/trainers/compile_utils.py``), finite differences, and Keras 3 itself on the
same weights where it is installed."""
import os

import numpy as np
import pytest

from fastdrop.layers import (LSTM, BatchNormalization, Conv2D, Dense, Dropout, Embedding,
                             Flatten, GRU, Input, SimpleRNN)
from fastdrop.models import NonFiniteLossError, Sequential


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _seq_model(C, act="softmax", cell=LSTM, T=6, F=3, seed=1, **kw):
    return Sequential([Input((T, F)), cell(8, return_sequences=True, **kw),
                       Dense(C, activation=act)], seed=seed)


def _logits_twin(model, C, cell=LSTM, T=6, F=3):
    """The same network with a linear last layer (its outputs are the logits)."""
    twin = Sequential([Input((T, F)), cell(8, return_sequences=True), Dense(C)], seed=5)
    twin.set_weights(model.get_weights())
    return twin


def _data(n=20, T=6, F=3, C=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, T, F)).astype(np.float32), rng.integers(0, C, size=(n, T)),
            rng)


# ------------------------------------------------------------ softmax on the last axis
@pytest.mark.parametrize("cell", [LSTM, GRU, SimpleRNN])
def test_sequence_softmax_is_per_step(cell):
    x, _, _ = _data()
    m = _seq_model(4, cell=cell)
    p = m.predict(x)
    assert p.shape == (20, 6, 4)
    z = _logits_twin(m, 4, cell=cell).predict(x)
    np.testing.assert_allclose(p, _softmax(z.astype(np.float64)), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    # model(x), the batch-1 fast path and MC all normalise each step
    np.testing.assert_allclose(m(x), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.predict(x[:1]), p[:1], rtol=1e-6, atol=1e-7)
    mean, _ = m.predict(x, mc_samples=3, seed=0)
    np.testing.assert_allclose(mean.sum(-1), 1.0, rtol=1e-5)


def test_conv_softmax_per_pixel():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    m = Sequential([Input((6, 6, 2)), Conv2D(3, 3, activation="relu"), Dense(5,
                    activation="softmax")], seed=0)
    twin = Sequential([Input((6, 6, 2)), Conv2D(3, 3, activation="relu"), Dense(5)], seed=3)
    twin.set_weights(m.get_weights())
    p = m.predict(x)
    assert p.shape == (5, 4, 4, 5)
    np.testing.assert_allclose(p, _softmax(twin.predict(x).astype(np.float64)), rtol=2e-5,
                               atol=1e-7)
    # a per-pixel classifier trains on per-pixel labels
    y = rng.integers(0, 5, size=(5, 4, 4))
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    r = m.evaluate(x, y, verbose=0, return_dict=True)
    ref = -np.log(np.take_along_axis(p.astype(np.float64), y[..., None], -1)).mean()
    assert r["loss"] == pytest.approx(ref, rel=1e-5)
    assert r["accuracy"] == pytest.approx((p.argmax(-1) == y).mean())


# ------------------------------------------------------------ per-step targets
def test_per_step_losses_match_numpy():
    x, y, rng = _data()
    m = _seq_model(4)
    p = m.predict(x).astype(np.float64)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    r = m.evaluate(x, y, batch_size=7, verbose=0, return_dict=True)
    assert r["loss"] == pytest.approx(-np.log(np.take_along_axis(p, y[..., None], -1)).mean(),
                                      rel=1e-5)
    assert r["accuracy"] == pytest.approx((p.argmax(-1) == y).mean())
    # labels with a trailing axis of 1 are the same targets
    r1 = m.evaluate(x, y[..., None], verbose=0, return_dict=True)
    assert r1["loss"] == pytest.approx(r["loss"], rel=1e-6)
    # one-hot per step
    m.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    r2 = m.evaluate(x, np.eye(4)[y], verbose=0, return_dict=True)
    assert r2["loss"] == pytest.approx(r["loss"], rel=1e-5)
    assert r2["accuracy"] == pytest.approx(r["accuracy"])
    # per-step regression: (n, T, 1) and (n, T) targets
    reg = _seq_model(1, act="linear")
    t = rng.normal(size=(20, 6))
    q = reg.predict(x)[..., 0].astype(np.float64)
    reg.compile("adam", "mse", metrics=["mae"])
    for tt in (t, t[..., None]):
        rr = reg.evaluate(x, tt, verbose=0, return_dict=True)
        assert rr["loss"] == pytest.approx(((q - t) ** 2).mean(), rel=1e-5)
        assert rr["mae"] == pytest.approx(np.abs(q - t).mean(), rel=1e-5)


def test_per_step_gradients_finite_differences():
    x, y, _ = _data(n=6, T=4, F=2, C=3)
    m = _seq_model(3, act="softmax", cell=SimpleRNN, T=4, F=2, seed=2)
    m.compile("sgd", "sparse_categorical_crossentropy")
    sw = np.random.default_rng(3).uniform(0.5, 2.0, size=(6, 4))
    res = m.loss_and_gradients(x, y, sample_weight=sw)
    W = m.get_weights()
    k = len(W) - 2                          # the Dense kernel

    def loss_at(Wk):
        m.set_weights(W[:k] + [Wk] + W[k + 1:])
        p = m.predict(x).astype(np.float64)
        return (-np.log(np.take_along_axis(p, y[..., None], -1))[..., 0] * sw).mean()

    assert res["loss"] == pytest.approx(loss_at(W[k]), rel=1e-5)
    g = res["gradients"][k]
    eps = 1e-2
    for (i, j) in [(0, 0), (3, 1), (7, 2)]:
        d = np.zeros_like(W[k])
        d[i, j] = eps
        fd = (loss_at(W[k] + d) - loss_at(W[k] - d)) / (2 * eps)
        assert g[i, j] == pytest.approx(fd, rel=2e-2, abs=2e-4)
    m.set_weights(W)


def test_per_step_targets_refused_when_they_do_not_fit():
    x, y, _ = _data()
    m = _seq_model(4)
    m.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        m.fit(x, y[:, :5], verbose=0)
    m.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="one-hot"):
        m.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        m.compile("adam", "sparse_categorical_crossentropy")
        m.fit(x, y, class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        m.fit(x, y, sample_weight=np.ones((20, 5)), verbose=0)


def test_per_step_training_learns_a_tagging_task():
    # the label of each step is the sign pattern of its input: learnable per step
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 5, 2)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64) + 2 * (x[..., 1] > 0)
    m = Sequential([Input((5, 2)), LSTM(16, return_sequences=True), Dense(4,
                    activation="softmax")], seed=0)
    from fastdrop.optimizers import Adam
    m.compile(Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert h.history["accuracy"][-1] > 0.9
    assert h.history["loss"][-1] < h.history["loss"][0] * 0.6


# ------------------------------------------------------------ masks reach the loss
def _masked(seed=0, n=24, T=7, V=15, C=4):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, V, size=(n, T))
    for i in range(n):
        x[i, rng.integers(2, T):] = 0
    y = rng.integers(0, C, size=(n, T))
    m = Sequential([Input((T,)), Embedding(V, 5, mask_zero=True),
                    LSTM(8, return_sequences=True), Dense(C, activation="softmax")], seed=seed)
    return m, x.astype(np.float32), y, rng


def test_mask_reaches_loss_and_metrics():
    m, x, y, rng = _masked()
    valid = x != 0
    p = m.predict(x).astype(np.float64)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"],
              weighted_metrics=["accuracy"])
    sw = rng.uniform(0.2, 2.0, size=y.shape)
    nll = -np.log(np.take_along_axis(p, y[..., None], -1))[..., 0]
    hit = (p.argmax(-1) == y)
    # one batch: Keras's apply_mask (total/valid) then sum over the batch size
    r = m.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True, sample_weight=sw)
    assert r["loss"] == pytest.approx((nll * sw * valid).sum() / valid.sum(), rel=1e-5)
    assert r["accuracy"] == pytest.approx(hit[valid].mean())          # unweighted
    assert r["weighted_accuracy"] == pytest.approx((hit * sw * valid).sum() / (sw * valid).sum())
    # labels at masked steps change nothing, in evaluate and in the gradients
    y2 = np.where(valid, y, (y + 1) % 4)
    assert m.evaluate(x, y2, verbose=0) == pytest.approx(m.evaluate(x, y, verbose=0),
                                                         rel=1e-7)
    g1 = m.loss_and_gradients(x, y)["gradients"]
    g2 = m.loss_and_gradients(x, y2)["gradients"]
    for a, b in zip(g1, g2):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    # several batches: each batch's mask rescales its own loss, batches weigh by size
    bs = 10
    ref = 0.0
    for lo in range(0, len(x), bs):
        v, l_ = valid[lo:lo + bs], nll[lo:lo + bs]
        ref += (l_ * v).sum() / v.sum() * len(v)
    assert m.evaluate(x, y, batch_size=bs, verbose=0)[0] == pytest.approx(ref / len(x),
                                                                          rel=1e-5)


def test_mask_in_fit_metrics_and_mc():
    m, x, y, _ = _masked(seed=1)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    valid = x != 0
    y2 = np.where(valid, y, (y + 2) % 4)
    w0 = m.get_weights()
    h1 = m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    w1 = m.get_weights()
    m.set_weights(w0)
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    m._step = 0
    h2 = m.fit(x, y2, epochs=2, batch_size=8, shuffle=False, verbose=0).history
    assert h1 == h2
    for a, b in zip(w1, m.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ 'accuracy' as Keras 3
def test_accuracy_resolved_from_shapes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    # mse + accuracy on one unit: BinaryAccuracy, y_true not thresholded
    m = Sequential([Input((4,)), Dense(1)], seed=0)
    m.compile("sgd", "mse", metrics=["accuracy", "acc"])
    t = rng.normal(size=(50, 1))
    p = m.predict(x).astype(np.float64)
    r = m.evaluate(x, t, verbose=0, return_dict=True)
    assert r["accuracy"] == pytest.approx((t == (p > 0.5)).mean()) and r["accuracy"] == 0.0
    assert r["acc"] == r["accuracy"]            # logged under the name given
    tb = (t > 0).astype(np.float32)
    assert m.evaluate(x, tb, verbose=0, return_dict=True)["accuracy"] == \
        pytest.approx((tb == (p > 0.5)).mean())
    # multi-label BCE + accuracy: categorical (argmax), as Keras
    m = Sequential([Input((4,)), Dense(3, activation="sigmoid")], seed=0)
    m.compile("sgd", "binary_crossentropy", metrics=["accuracy", "binary_accuracy"])
    t = (rng.uniform(size=(50, 3)) > 0.5).astype(np.float32)
    p = m.predict(x).astype(np.float64)
    r = m.evaluate(x, t, verbose=0, return_dict=True)
    assert r["accuracy"] == pytest.approx((p.argmax(1) == t.argmax(1)).mean())
    assert r["binary_accuracy"] == pytest.approx((t == (p > 0.5)).mean())
    # sparse labels against several outputs: sparse categorical
    m = Sequential([Input((4,)), Dense(3, activation="softmax")], seed=0)
    m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    lab = rng.integers(0, 3, 50)
    p = m.predict(x)
    for yy in (lab, lab[:, None]):
        assert m.evaluate(x, yy, verbose=0, return_dict=True)["accuracy"] == \
            pytest.approx((p.argmax(1) == lab).mean())


def test_metrics_ignore_sample_weight_weighted_metrics_use_it():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    sw = rng.uniform(0.0, 2.0, 64)
    m = Sequential([Input((4,)), Dense(3, activation="softmax")], seed=0)
    m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"],
              weighted_metrics=["accuracy", "mse"])
    hit = m.predict(x).argmax(1) == y
    r = m.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    assert r["accuracy"] == pytest.approx(hit.mean())
    assert r["weighted_accuracy"] == pytest.approx((hit * sw).sum() / sw.sum())
    assert "mse" in r
    h = m.fit(x, y, sample_weight=sw, epochs=1, batch_size=64, verbose=0, shuffle=False)
    assert h.history["accuracy"][0] == pytest.approx(hit.mean())


# ------------------------------------------------------------ non-finite steps
@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("epochs", [1, 2, 3])
@pytest.mark.parametrize("bn", [False, True])
def test_huge_inputs_never_leave_nonfinite_weights(opt, epochs, bn):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(32, 8)) * 1e20).astype(np.float32)
    y = rng.integers(0, 3, 32)
    layers = [Input((8,)), Dense(16, activation="relu")]
    layers += [BatchNormalization()] if bn else []
    m = Sequential(layers + [Dense(3, activation="softmax")], seed=0)
    m.compile(opt, "sparse_categorical_crossentropy")
    try:
        m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        raised = None
    except NonFiniteLossError as e:
        raised = str(e)
    finite = all(np.isfinite(w).all() for w in m.get_weights()) and \
        np.isfinite(m.optimizer.state()).all()
    if raised is None:
        assert finite
    elif "step was not applied: every" in raised:
        assert finite                        # the claim is true
    else:
        assert "not finite" in raised        # a truthful error otherwise


def test_refused_step_restores_everything():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    m = Sequential([Input((5,)), Dense(8, activation="relu"), BatchNormalization(),
                    Dense(3, activation="softmax")], seed=0)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=10, verbose=0)
    before = ([w.copy() for w in m.get_weights()], m.optimizer.state().copy(),
              m.optimizer.iterations, m._step)
    xb = x.copy()
    xb[25] = 3e37                          # a batch whose gradients overflow
    with pytest.raises(NonFiniteLossError, match="step was not applied"):
        m.fit(xb, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    after = m.get_weights()
    # the first two batches were good steps; redo them to compare with the refusal
    ref = Sequential([Input((5,)), Dense(8, activation="relu"), BatchNormalization(),
                      Dense(3, activation="softmax")], seed=0)
    ref.compile("adam", "sparse_categorical_crossentropy")
    ref.fit(x, y, epochs=1, batch_size=10, verbose=0)
    ref.fit(x[:20], y[:20], epochs=1, batch_size=10, shuffle=False, verbose=0)
    for a, b in zip(after, ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m.optimizer.state(), ref.optimizer.state())
    assert m.optimizer.iterations == ref.optimizer.iterations == before[2] + 2
    # train_on_batch refuses the same way
    with pytest.raises(NonFiniteLossError, match="step was not applied"):
        m.train_on_batch(xb[20:30], y[20:30])
    for a, b in zip(m.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------ BatchNorm and training=True
def test_call_training_true_updates_moving_statistics_mc_does_not():
    rng = np.random.default_rng(2)
    x = rng.normal(loc=3.0, scale=2.0, size=(64, 4)).astype(np.float32)
    m = Sequential([Input((4,)), BatchNormalization(momentum=0.9), Dropout(0.3), Dense(2)],
                   seed=0)
    m.build()
    def stats():          # get_weights order: gamma, beta, moving mean, moving variance
        return [w.copy() for w in m.get_weights()[2:4]]
    mean0, var0 = stats()
    m.predict(x, mc_samples=5, seed=1)
    m.predict(x)
    for a, b in zip(stats(), (mean0, var0)):
        np.testing.assert_array_equal(a, b)
    m(x, training=True)
    # Keras 3: moving = moving * momentum + batch * (1 - momentum), the batch variance
    # biased (keras/src/layers/normalization/batch_normalization.py)
    bm, bv = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    mean1, var1 = stats()
    np.testing.assert_allclose(mean1, mean0 * 0.9 + bm * 0.1, rtol=1e-5)
    np.testing.assert_allclose(var1, var0 * 0.9 + bv * 0.1, rtol=1e-5)


# ------------------------------------------------------------ Keras 3 itself
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("weights", ["none", "per_step"])
def test_masked_per_step_loss_equals_keras(tmp_path, weights):
    keras = _keras()
    from fastdrop.models import load_model
    rng = np.random.default_rng(7)
    n, T, V, C = 24, 7, 20, 5
    x = rng.integers(1, V, size=(n, T))
    for i in range(n):
        x[i, rng.integers(2, T):] = 0
    y = rng.integers(0, C, size=(n, T))
    sw = None if weights == "none" else rng.uniform(0.2, 2, size=(n, T))
    km = keras.Sequential([keras.Input((T,), dtype="int32"), keras.layers.Embedding(
        V, 6, mask_zero=True), keras.layers.LSTM(8, return_sequences=True),
        keras.layers.Dense(C, activation="softmax")])
    km.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    path = str(tmp_path / "m.keras")
    km.save(path)
    fm = load_model(path)
    kr = km.evaluate(x, y, batch_size=8, verbose=0, sample_weight=sw, return_dict=True)
    fr = fm.evaluate(x.astype(np.float32), y, batch_size=8, verbose=0, sample_weight=sw,
                     return_dict=True)
    assert fr["loss"] == pytest.approx(kr["loss"], rel=1e-5)
    assert fr["accuracy"] == pytest.approx(kr["accuracy"], rel=1e-6)


def test_accuracy_resolution_equals_keras():
    keras = _keras()
    rng = np.random.default_rng(8)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    cases = [("mse", 1, rng.normal(size=(40, 1)), "linear"),
             ("binary_crossentropy", 3, (rng.uniform(size=(40, 3)) > 0.5).astype("float32"),
              "sigmoid"),
             ("sparse_categorical_crossentropy", 3, rng.integers(0, 3, 40), "softmax")]
    for loss, units, y, act in cases:
        km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation=act)])
        km.compile("sgd", loss, metrics=["accuracy"])
        fm = Sequential([Input((4,)), Dense(units, activation=act)], seed=0)
        fm.compile("sgd", loss, metrics=["accuracy"])
        fm.set_weights([np.asarray(w) for w in km.get_weights()])
        kr = km.evaluate(x, y, verbose=0, return_dict=True)
        fr = fm.evaluate(x, y, verbose=0, return_dict=True)
        assert fr["accuracy"] == pytest.approx(kr["accuracy"], abs=1e-6), loss
        assert fr["loss"] == pytest.approx(kr["loss"], rel=1e-4), loss


# ------------------------------------------------------------ Bidirectional and masks
def _bidir_data(seed=9, n=12, T=6, V=12):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, V, size=(n, T))
    for i in range(n):
        x[i, rng.integers(2, T):] = 0
    return x


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul"])
def test_masked_bidirectional_sequences_zero_at_masked_steps(merge_mode):
    from fastdrop.layers import Bidirectional
    x = _bidir_data().astype(np.float32)
    m = Sequential([Input((6,)), Embedding(12, 4, mask_zero=True),
                    Bidirectional(GRU(3, return_sequences=True), merge_mode=merge_mode),
                    Dense(2)], seed=0)
    out = m.predict(x)
    masked = x == 0
    bias = m.get_weights()[-1]
    np.testing.assert_allclose(out[masked], np.broadcast_to(bias, out[masked].shape),
                               atol=1e-6)
    m.compile("sgd", "mse")
    y = np.random.default_rng(0).normal(size=out.shape)
    g = m.loss_and_gradients(x, y)["gradients"]
    assert all(np.isfinite(a).all() for a in g if a is not None)
    # targets at masked steps are out of the loss: nothing moves
    y2 = np.where(masked[..., None], y + 5.0, y)
    g2 = m.loss_and_gradients(x, y2)["gradients"]
    for a, b in zip(g, g2):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_masked_bidirectional_equals_keras(tmp_path):
    keras = _keras()
    from fastdrop.models import load_model
    x = _bidir_data(n=10, T=7, V=15)
    km = keras.Sequential([keras.Input((7,), dtype="int32"),
                           keras.layers.Embedding(15, 5, mask_zero=True),
                           keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
                           keras.layers.Dense(3)])
    path = str(tmp_path / "b.keras")
    km.save(path)
    fm = load_model(path)
    np.testing.assert_allclose(fm.predict(x.astype(np.float32)), km.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ BatchNorm under a mask
def _bn_masked_model(seed=0):
    return Sequential([Input((6,)), Embedding(12, 4, mask_zero=True),
                       SimpleRNN(5, return_sequences=True),
                       BatchNormalization(momentum=0.8), Dense(3)], seed=seed)


def test_batchnorm_moments_over_valid_steps():
    x = _bidir_data(n=10).astype(np.float32)
    m = _bn_masked_model()
    m.build()
    W = m.get_weights()
    # the RNN's outputs (the BN's inputs), from a twin without BN
    pre = Sequential([Input((6,)), Embedding(12, 4, mask_zero=True),
                      SimpleRNN(5, return_sequences=True)], seed=3)
    pre.set_weights(W[:4])
    h = pre.predict(x).astype(np.float64)
    valid = x != 0
    mu = h[valid].mean(0)
    var = h[valid].var(0)
    out = m(x, training=True)
    gamma, beta, mm, mv = [W[4 + i].astype(np.float64) for i in range(4)]
    ref = ((h - mu) / np.sqrt(var + 1e-3) * gamma + beta) @ W[8] + W[9]
    np.testing.assert_allclose(out[valid], ref[valid], rtol=1e-4, atol=1e-5)
    new = m.get_weights()
    np.testing.assert_allclose(new[6], mm * 0.8 + mu * 0.2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new[7], mv * 0.8 + var * 0.2, rtol=1e-5, atol=1e-7)
    # what the mask hides moves nothing: tokens after the padding start are irrelevant
    # already (padding is 0); the moments ignore the masked steps' RNN outputs


def test_batchnorm_masked_gradients_finite_differences():
    x = _bidir_data(n=8).astype(np.float32)
    m = _bn_masked_model(seed=1)
    m.compile("sgd", "mse")
    y = np.random.default_rng(1).normal(size=(8, 6, 3))
    W0 = m.get_weights()
    state = [w.copy() for w in W0]
    res = m.loss_and_gradients(x, y)

    def loss_at(Ws):
        m.set_weights(Ws)
        r = m.loss_and_gradients(x, y)["loss"]
        m.set_weights(state)
        return r

    eps = 1e-2
    for k, idx in [(4, (1,)), (2, (0, 2)), (0, (3, 1))]:   # gamma, an RNN kernel, embedding
        d = np.zeros_like(W0[k])
        d[idx] = eps
        up = [w.copy() for w in W0]
        dn = [w.copy() for w in W0]
        up[k] = up[k] + d
        dn[k] = dn[k] - d
        fd = (loss_at(up) - loss_at(dn)) / (2 * eps)
        assert res["gradients"][k][idx] == pytest.approx(fd, rel=3e-2, abs=3e-4), k


def test_batchnorm_masked_equals_keras(tmp_path):
    keras = _keras()
    from fastdrop.models import load_model
    x = _bidir_data(n=10)
    km = keras.Sequential([keras.Input((6,), dtype="int32"),
                           keras.layers.Embedding(12, 4, mask_zero=True),
                           keras.layers.GRU(5, return_sequences=True),
                           keras.layers.BatchNormalization(momentum=0.7), keras.layers.Dense(3)])
    path = str(tmp_path / "bn.keras")
    km.save(path)
    fm = load_model(path)
    ko = np.asarray(km(x, training=True).detach().cpu())
    fo = fm(x.astype(np.float32), training=True)
    valid = x != 0
    np.testing.assert_allclose(fo[valid], ko[valid], rtol=1e-4, atol=1e-5)
    kw = [np.asarray(w) for w in km.get_weights()]
    fw = fm.get_weights()
    for a, b in zip(fw[-4:-2], kw[-4:-2]):      # moving mean and variance
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ one mask path, every mode
def _family(name):
    from fastdrop.layers import Bidirectional, GlobalAveragePooling1D, GlobalMaxPooling1D
    head = {
        "lstm_last": [LSTM(5, dropout=0.2)],
        "gru_rd": [GRU(5, recurrent_dropout=0.3, return_sequences=True), Dense(3)],
        "simplernn_seq": [SimpleRNN(5, return_sequences=True), Dropout(0.3), Dense(3)],
        "bidir_seq": [Bidirectional(LSTM(4, return_sequences=True, dropout=0.2)), Dense(3)],
        "bidir_last": [Bidirectional(GRU(4), merge_mode="sum")],
        "gap1d": [Dropout(0.3), GlobalAveragePooling1D()],
        "gmp1d": [LSTM(4, return_sequences=True), GlobalMaxPooling1D()],
        "bn_seq": [SimpleRNN(5, return_sequences=True), BatchNormalization(), Dense(3)],
    }[name]
    return Sequential([Input((7,)), Embedding(10, 4, mask_zero=True)] + head, seed=4)


@pytest.mark.parametrize("family", ["lstm_last", "gru_rd", "simplernn_seq", "bidir_seq",
                                    "bidir_last", "gap1d", "gmp1d", "bn_seq"])
def test_what_the_mask_hides_moves_nothing(family):
    """Only the padding's embedding row changes: predict, MC predict, the training loss and
    its gradients (and BN's moving statistics) stay exactly as they were."""
    x = _bidir_data(seed=11, n=9, T=7, V=10).astype(np.float32)
    m = _family(family)
    m.build()
    out_shape = m.output_shape[1:]
    y = np.random.default_rng(2).normal(size=(9,) + tuple(out_shape))
    m.compile("sgd", "mse")
    W = m.get_weights()

    def run():
        r = {"infer": m.predict(x), "mc": m.predict(x, mc_samples=4, seed=3)[0]}
        lg = m.loss_and_gradients(x, y, step=2)
        r["loss"] = lg["loss"]
        r["grads"] = [g for i, g in enumerate(lg["gradients"]) if g is not None and i != 0]
        before = [w.copy() for w in m.get_weights()]
        m(x, training=True)                      # moves BN statistics (if any)
        r["state"] = [w.copy() for w in m.get_weights()]
        m.set_weights(before)
        return r

    a = run()
    W2 = [w.copy() for w in W]
    W2[0][0] = np.random.default_rng(5).normal(size=W2[0][0].shape) * 3.0
    m.set_weights(W2)
    b = run()
    m.set_weights(W)
    for k in ("infer", "mc"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for g1, g2 in zip(a["grads"], b["grads"]):
        np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
    for s1, s2 in list(zip(a["state"], b["state"]))[1:]:
        np.testing.assert_allclose(s1, s2, rtol=1e-6, atol=1e-7)

"""ONNX export (``model.export(path, format='onnx')``, ``fastdrop.io.onnx``): the exported
graph passes ``onnx.checker`` and, run by onnxruntime (the peer oracle), equals
``model.predict`` within 1e-4 of the output's scale at batch 1 and N; the
``mc_dropout=True`` export draws new masks on every run at onnxruntime's default
optimization level, with fastdrop's noise in distribution (mask rates, broadcast
structure, MC means and standard deviations against ``predict(x, mc_samples=T)``)."""
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastdrop.io.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, to_onnx  # noqa: E402
from fastdrop.layers import (GRU, LSTM, Activation, AlphaDropout,  # noqa: E402
                             AveragePooling2D, BatchNormalization, Bidirectional, Conv2D, Dense,
                             Dropout, Embedding, Flatten, GaussianDropout,
                             GlobalAveragePooling1D, GlobalAveragePooling2D,
                             GlobalMaxPooling1D, GlobalMaxPooling2D, Input, Layer,
                             MaxPooling2D, Reshape, SimpleRNN, SpatialDropout2D)
from fastdrop.models import Sequential  # noqa: E402

ACTIVATIONS = ["relu", "sigmoid", "tanh", "softplus", "elu", "selu", "gelu", "gelu_tanh",
               "silu", "leaky_relu", "relu6", "hard_sigmoid", "softsign", "mish", "linear"]


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _feed(sess, x):
    dtype = np.int64 if sess.get_inputs()[0].type == "tensor(int64)" else np.float32
    return {INPUT_NAME: np.ascontiguousarray(x, dtype)}


def _ort(model, x, mc=False, opset=17):
    proto = to_onnx(model, mc_dropout=mc, opset=opset)
    return _session(proto).run([OUTPUT_NAME], _feed(_session(proto), x))[0]


def _close(y, ref, tol=1e-4):
    """max |y - ref| <= tol * max |ref| (relative to the output's scale)."""
    assert y.shape == ref.shape, (y.shape, ref.shape)
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(y.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max error {err:.3g} > {tol} x scale {scale:.3g}"


def _randomize(model, rng, scale=1.0):
    """Weights and BN statistics away from their initial values (non-trivial outputs)."""
    for layer in model.layers:
        ws = []
        for v in layer.variables:
            if v.name in ("moving_variance", "gamma"):
                ws.append(rng.uniform(0.5, 2.0, v.shape))
            elif v.name in ("moving_mean", "beta", "bias"):
                ws.append(rng.normal(0.0, 0.5, v.shape))
            else:
                fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
                ws.append(rng.normal(0.0, scale / np.sqrt(max(fan_in, 1)), v.shape))
        if ws:
            layer.set_weights(ws)
    return model


def _check(model, x_fn, batches=(1, 7), opset=17):
    """The deterministic export equals predict at every batch size."""
    proto = to_onnx(model, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    sess = _session(proto)
    for n in batches:
        x = x_fn(n)
        _close(sess.run([OUTPUT_NAME], _feed(sess, x))[0], model.predict(x))


# ====================================================================== deterministic
@pytest.mark.parametrize("batch", [1, 9])
def test_mlp_matches_predict(batch):
    rng = np.random.default_rng(0)
    m = Sequential([Input((20,)), Dense(32, activation="relu"), Dropout(0.5),
                    Dense(16), BatchNormalization(), Activation("tanh"), GaussianDropout(0.3),
                    Dense(16, activation="elu", drop_connect=0.3), AlphaDropout(0.1),
                    BatchNormalization(), Dense(10, activation="softmax")], seed=0)
    _randomize(m, rng, 2.0)
    x = rng.normal(size=(batch, 20)).astype(np.float32)
    _close(_ort(m, x), m.predict(x))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_every_activation(act):
    rng = np.random.default_rng(1)
    m = Sequential([Input((6,)), Dense(8), Activation(act), Dense(5, activation=act)], seed=1)
    _randomize(m, rng, 2.0)
    _check(m, lambda n: rng.normal(0, 3, size=(n, 6)))


def test_dense_on_nd_inputs_acts_on_last_axis():
    rng = np.random.default_rng(2)
    m = Sequential([Input((5, 7)), Dense(6, activation="gelu"), Dropout(0.2), Dense(4),
                    BatchNormalization(), Dense(3, activation="tanh")], seed=2)
    _randomize(m, rng, 2.0)
    _check(m, lambda n: rng.normal(size=(n, 5, 7)))
    assert {"MatMul"} <= {n.op_type for n in to_onnx(m).graph.node}


def test_final_softmax_acts_on_the_last_axis():
    """On an N-D output the exported softmax normalises the last axis (Keras's softmax);
    the oracle is the linear model's output put through a NumPy softmax."""
    rng = np.random.default_rng(3)
    m = Sequential([Input((3, 4)), Dense(5, activation="softmax")], seed=3)
    lin = Sequential([Input((3, 4)), Dense(5)], seed=3)
    _randomize(m, rng, 2.0)
    lin.set_weights(m.get_weights())
    x = rng.normal(size=(6, 3, 4)).astype(np.float32)
    z = lin.predict(x).astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = _ort(m, x)
    _close(y, p)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def _cnn(rng):
    m = Sequential([
        Input((13, 12, 3)),
        Conv2D(8, (3, 2), strides=(2, 1), padding="same"), BatchNormalization(),   # folded
        Activation("relu"), SpatialDropout2D(0.3),
        Conv2D(6, (2, 3), padding="valid", activation="relu"), BatchNormalization(),  # BN op
        AveragePooling2D(3, strides=2, padding="same"),
        Conv2D(5, 3, dilation_rate=2, padding="same", activation="relu"),
        MaxPooling2D((2, 3), strides=(1, 2), padding="same"),
        Conv2D(4, 1, strides=(1, 2)), Activation("softsign"),
        Flatten(), Dropout(0.5), Dense(16, activation="relu"), Dense(4, activation="softmax")],
        seed=4)
    return _randomize(m, rng, 1.5)


def test_cnn_matches_predict():
    rng = np.random.default_rng(4)
    m = _cnn(rng)
    _check(m, lambda n: rng.normal(size=(n, 13, 12, 3)))
    ops = [n.op_type for n in to_onnx(m).graph.node]
    # NHWC -> NCHW once; the Flatten + Dense keep CHW order (kernel rows permuted)
    assert ops.count("Transpose") == 1 and "AveragePool" in ops and "MaxPool" in ops


def test_cnn_valid_same_average_pooling_excludes_padding():
    rng = np.random.default_rng(5)
    for pad in ("same", "valid"):
        m = Sequential([Input((7, 6, 2)), AveragePooling2D((3, 2), strides=(2, 2), padding=pad),
                        MaxPooling2D(2, strides=1, padding=pad), Flatten()], seed=5)
        _check(m, lambda n: rng.normal(size=(n, 7, 6, 2)) + 5.0)


def test_mnist_convnet_matches_predict():
    rng = np.random.default_rng(6)
    m = Sequential([Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                    Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.5),
                    Dense(10, activation="softmax")], seed=6)
    _randomize(m, rng, 3.0)
    _check(m, lambda n: rng.uniform(size=(n, 28, 28, 1)), batches=(1, 16))


@pytest.mark.parametrize("tail", ["gap", "gmp_keep", "dense", "flat_bn", "reshape", "out"])
def test_image_tails(tail):
    """Every way out of the NCHW region: global pools, Dense on images, BN and Reshape
    after a Flatten, the image itself as the output."""
    rng = np.random.default_rng(7)
    layers = [Input((6, 5, 3)), Conv2D(4, 3, padding="same", activation="relu")]
    layers += {"gap": [GlobalAveragePooling2D()],
               "gmp_keep": [GlobalMaxPooling2D(keepdims=True), Dense(3)],
               "dense": [Dense(3)],
               "flat_bn": [Flatten(), BatchNormalization(), Dropout(0.1), Dense(3)],
               "reshape": [Reshape((30, 4)), GlobalMaxPooling1D()],
               "out": [SpatialDropout2D(0.5)]}[tail]
    m = _randomize(Sequential(layers, seed=7), rng, 2.0)
    _check(m, lambda n: rng.normal(size=(n, 6, 5, 3)))


def test_global_pools_on_nhwc_images_and_opsets():
    rng = np.random.default_rng(8)
    m = Sequential([Input((16,)), Reshape((4, 2, 2)), GlobalAveragePooling2D(keepdims=True),
                    Flatten(), Dense(3)], seed=8)
    _randomize(m, rng)
    for opset in (17, 18, 21):
        _check(m, lambda n: rng.normal(size=(n, 16)), opset=opset)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_v1", "simple"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_recurrent_layers(cell, return_sequences):
    rng = np.random.default_rng(9)
    rnn = {"lstm": lambda: LSTM(7, return_sequences=return_sequences, dropout=0.3),
           "gru": lambda: GRU(7, return_sequences=return_sequences, recurrent_dropout=0.2),
           "gru_v1": lambda: GRU(7, reset_after=False, return_sequences=return_sequences),
           "simple": lambda: SimpleRNN(7, return_sequences=return_sequences)}[cell]()
    layers = [Input((6, 5)), rnn] + ([Flatten()] if return_sequences else []) + [Dense(3)]
    m = _randomize(Sequential(layers, seed=9), rng, 1.5)
    _check(m, lambda n: rng.normal(size=(n, 6, 5)))
    op = {"lstm": "LSTM", "gru": "GRU", "gru_v1": "GRU", "simple": "RNN"}[cell]
    assert op in {n.op_type for n in to_onnx(m).graph.node}


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional(merge_mode, return_sequences):
    rng = np.random.default_rng(10)
    layers = [Input((6, 5)), Bidirectional(LSTM(4, return_sequences=return_sequences),
                                           merge_mode=merge_mode)]
    layers += [GlobalAveragePooling1D()] if return_sequences else []
    m = _randomize(Sequential(layers + [Dense(3)], seed=10), rng, 1.5)
    _check(m, lambda n: rng.normal(size=(n, 6, 5)))


@pytest.mark.parametrize("variant", ["go_backwards", "hard_sigmoid", "linear", "bidi_backwards"])
def test_recurrent_variants_through_scan_or_reversal(variant):
    rng = np.random.default_rng(11)
    rnn = {"go_backwards": lambda: GRU(5, go_backwards=True, return_sequences=True),
           "hard_sigmoid": lambda: LSTM(5, recurrent_activation="hard_sigmoid",
                                        activation="relu", return_sequences=True),
           "linear": lambda: SimpleRNN(5, activation="linear", return_sequences=True),
           "bidi_backwards": lambda: Bidirectional(GRU(5, go_backwards=True,
                                                       reset_after=False,
                                                       return_sequences=True))}[variant]()
    m = _randomize(Sequential([Input((6, 4)), rnn, Flatten(), Dense(3)], seed=11), rng)
    _check(m, lambda n: rng.normal(size=(n, 6, 4)))


def test_free_time_axis():
    rng = np.random.default_rng(12)
    m = Sequential([Input((None, 4)), LSTM(5, return_sequences=True), GRU(3)], seed=12)
    _randomize(m, rng)
    sess = _session(to_onnx(m))
    for n, T in ((1, 3), (5, 8)):
        x = rng.normal(size=(n, T, 4)).astype(np.float32)
        _close(sess.run([OUTPUT_NAME], _feed(sess, x))[0], m.predict(x))


def _token_ids(rng, n, T, V):
    ids = rng.integers(1, V, size=(n, T))
    pattern = [lambda r: r.__setitem__(slice(0, 3), 0),         # pre-padding (Keras default)
               lambda r: r.__setitem__(slice(T - 2, T), 0),     # post-padding
               lambda r: r.__setitem__(T // 2, 0),              # a hole
               lambda r: r.__setitem__(slice(None), 0),         # all padding
               lambda r: None]
    for i in range(n):
        pattern[i % len(pattern)](ids[i])
    return ids


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_v1", "simple", "bidi"])
def test_masked_sequences_carry_state(cell):
    """Embedding(mask_zero=True): masked steps (pre-, post-padding, holes) carry the
    state and repeat the output, through a Scan."""
    rng = np.random.default_rng(13)
    rnn = {"lstm": lambda: LSTM(6, return_sequences=True),
           "gru": lambda: GRU(6, return_sequences=True),
           "gru_v1": lambda: GRU(6, reset_after=False, return_sequences=True),
           "simple": lambda: SimpleRNN(6, return_sequences=True),
           "bidi": lambda: Bidirectional(GRU(6, return_sequences=True), merge_mode="sum")}[cell]
    m = Sequential([Input((9,)), Embedding(20, 5, mask_zero=True), rnn(), Dense(6),
                    LSTM(4, return_sequences=True), GlobalAveragePooling1D(), Dense(3)],
                   seed=13)
    _randomize(m, rng, 2.0)
    _check(m, lambda n: _token_ids(rng, n, 9, 20), batches=(1, 10))
    ops = {n.op_type for n in to_onnx(m).graph.node}
    assert "Scan" in ops and "Gather" in ops


def test_embedding_without_mask_and_int64_input():
    rng = np.random.default_rng(14)
    m = Sequential([Input((7,)), Embedding(30, 4), GRU(5, return_sequences=True),
                    GlobalMaxPooling1D(), Dense(2, activation="sigmoid")], seed=14)
    _randomize(m, rng, 2.0)
    proto = to_onnx(m)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    _check(m, lambda n: rng.integers(0, 30, size=(n, 7)))


def test_export_method_writes_a_file(tmp_path):
    rng = np.random.default_rng(15)
    m = _randomize(Sequential([Input((4,)), Dense(3, activation="softmax")], seed=15), rng)
    path = tmp_path / "m.onnx"
    assert m.export(str(path)) == str(path)
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in sess.get_outputs()] == [OUTPUT_NAME]
    assert sess.get_inputs()[0].shape == ["batch", 4]
    x = rng.normal(size=(3, 4)).astype(np.float32)
    _close(sess.run(None, {INPUT_NAME: x})[0], m.predict(x))
    assert not [p for p in tmp_path.iterdir() if p.name != "m.onnx"]   # no temporary left
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    assert {p.key: p.value for p in model.metadata_props}["fastdrop.mc_dropout"] == "false"


# ====================================================================== MC dropout
def _runs(model, x, n_runs, **kw):
    sess = _session(to_onnx(model, mc_dropout=True, **kw))
    feed = _feed(sess, x)
    return np.stack([sess.run([OUTPUT_NAME], feed)[0] for _ in range(n_runs)]).astype(np.float64)


def test_mc_export_survives_default_optimizer_and_differs_run_to_run():
    rng = np.random.default_rng(20)
    m = _randomize(Sequential([Input((10,)), Dense(32, activation="relu"), Dropout(0.5),
                               Dense(4)], seed=20), rng)
    x = rng.normal(size=(5, 10)).astype(np.float32)
    proto = to_onnx(m, mc_dropout=True)
    so = ort.SessionOptions()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a, b = (sess.run(None, {INPUT_NAME: x})[0] for _ in range(2))
    assert not np.allclose(a, b)
    # the deterministic export is deterministic
    det = _session(to_onnx(m))
    np.testing.assert_array_equal(det.run(None, {INPUT_NAME: x})[0],
                                  det.run(None, {INPUT_NAME: x})[0])
    assert "Dropout" not in {n.op_type for n in proto.graph.node}


def test_mc_mean_on_a_linear_head_approaches_the_deterministic_output():
    """Everything after the first dropout is linear (and the masks independent), so
    E[output] = deterministic output exactly (inverted dropout: E[mask] = 1).  With N runs the mean's error per element
    is ~ sd/sqrt(N); 5 standard errors bound all 40 elements with false-alarm
    probability < 1e-4 (normal tail, 399 degrees of freedom)."""
    rng = np.random.default_rng(21)
    m = _randomize(Sequential([Input((12,)), Dense(64, activation="relu"), Dropout(0.4),
                               Dense(32), Dropout(0.3), Dense(4)],
                              seed=21), rng, 2.0)
    x = rng.normal(size=(10, 12)).astype(np.float32)
    N = 400
    y = _runs(m, x, N)
    se = y.std(0, ddof=1) / np.sqrt(N)
    det = m.predict(x).astype(np.float64)
    assert (np.abs(y.mean(0) - det) <= 5 * se + 1e-6).all()
    assert (y.std(0) > 0).all()


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_mc_dropout_mask_rate_and_scale(rate):
    x = np.ones((8, 1000), np.float32)
    m = Sequential([Input((1000,)), Dropout(rate)], seed=22)
    y = _runs(m, x, 2)
    zero = (y == 0).mean()
    sd = np.sqrt(rate * (1 - rate) / y.size)
    assert abs(zero - rate) < 5 * sd
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - rate), rtol=1e-6)


def test_mc_spatial_dropout_one_draw_per_sample_and_channel():
    """SpatialDropout2D after a convolution (NCHW inside the graph): every (sample,
    channel) map is all kept or all dropped; the dropped fraction matches the rate."""
    n, c, rate = 64, 16, 0.5
    m = Sequential([Input((4, 5, c)), Conv2D(c, 1, use_bias=False), SpatialDropout2D(rate)],
                   seed=23)
    m.layers[0].set_weights([np.eye(c, dtype=np.float32)[None, None]])
    y = _runs(m, np.ones((n, 4, 5, c), np.float32), 3)
    per_map = y.reshape(3, n, 20, c)
    assert (per_map == per_map[:, :, :1, :]).all()          # constant over H, W
    dropped = (per_map[:, :, 0, :] == 0).mean()
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / (3 * n * c))
    np.testing.assert_allclose(y[y != 0], 2.0, rtol=1e-6)


@pytest.mark.parametrize("noise_shape", [(None, 1, 1, 3), (1, 4, 5, 3), (None, 4, 1, 1)])
def test_mc_dropout_noise_shape_broadcasts(noise_shape):
    m = Sequential([Input((4, 5, 3)), Conv2D(3, 1, use_bias=False), Dropout(0.5, noise_shape)],
                   seed=24)
    m.layers[0].set_weights([np.eye(3, dtype=np.float32)[None, None]])
    y = _runs(m, np.ones((32, 4, 5, 3), np.float32), 4)
    keep = y != 0
    for ax, d in enumerate(noise_shape):   # broadcast axes repeat the mask
        if d == 1:
            first = np.take(keep, [0], axis=ax + 1)
            assert (keep == first).all()
    assert 0.3 < keep.mean() < 0.7
    assert not (keep[0] == keep[1]).all()


def test_mc_gaussian_and_alpha_dropout_moments():
    rate = 0.3
    x = np.ones((16, 500), np.float32)
    g = _runs(Sequential([Input((500,)), GaussianDropout(rate)], seed=25), x, 2)
    sd = np.sqrt(rate / (1 - rate))
    assert abs(g.mean() - 1.0) < 5 * sd / np.sqrt(g.size)
    assert abs(g.std() / sd - 1.0) < 0.05
    ad = AlphaDropout(rate)
    a = _runs(Sequential([Input((500,)), ad], seed=25), x, 2)
    A, B = ad.affine
    kept, dropped = A * 1.0 + B, A * ad.ALPHA_P + B
    is_kept = np.isclose(a, kept, rtol=1e-5)
    assert (is_kept | np.isclose(a, dropped, rtol=1e-5)).all()
    assert abs((~is_kept).mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / a.size)


def _mc_matches_fastdrop(model, x, T=1000, mean_sd=5.0, sd_rel=0.2):
    """ORT runs and fastdrop's MC estimate the same distribution: means within
    mean_sd standard errors of their difference, standard deviations within sd_rel."""
    y = _runs(model, x, T)
    mean, std = model.predict(x, mc_samples=T, seed=1)
    ort_mean, ort_std = y.mean(0), y.std(0)
    se = np.sqrt(ort_std ** 2 / T + np.asarray(std, np.float64) ** 2 / T)
    scale = float(np.abs(mean).max())
    assert (np.abs(ort_mean - mean) <= mean_sd * se + 1e-5 * scale).all()
    assert (np.abs(ort_std - std) <= sd_rel * std + 1e-4 * scale).all()
    assert (ort_std > 0).any()


@pytest.mark.parametrize("case", ["lstm_in", "lstm_rec", "gru_rec", "gru_v1_rec", "simple_rec",
                                  "bidi", "masked"])
def test_mc_recurrent_dropout_in_distribution(case):
    """Variational RNN dropout (fastdrop's and Keras 3's masks: one per sequence, per
    gate when recurrent_dropout > 0) against fastdrop's own MC passes."""
    rng = np.random.default_rng(26)
    inp = [Input((5, 4))]
    rnn = {"lstm_in": lambda: LSTM(6, dropout=0.4),
           "lstm_rec": lambda: LSTM(6, dropout=0.3, recurrent_dropout=0.4),
           "gru_rec": lambda: GRU(6, dropout=0.2, recurrent_dropout=0.4),
           "gru_v1_rec": lambda: GRU(6, reset_after=False, recurrent_dropout=0.4),
           "simple_rec": lambda: SimpleRNN(6, dropout=0.3, recurrent_dropout=0.3),
           "bidi": lambda: Bidirectional(LSTM(6, dropout=0.3, recurrent_dropout=0.2)),
           "masked": lambda: GRU(6, dropout=0.3, recurrent_dropout=0.3)}[case]
    if case == "masked":
        inp = [Input((5,)), Embedding(10, 4, mask_zero=True)]
    m = _randomize(Sequential(inp + [rnn(), Dense(3)], seed=26), rng, 2.0)
    if case == "masked":
        x = _token_ids(rng, 5, 5, 10)
        x[3] = [1, 2, 3, 4, 5]       # keep every row with some tokens
    else:
        x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    _mc_matches_fastdrop(m, x)
    ops = {n.op_type for n in to_onnx(m, mc_dropout=True).graph.node}
    assert ("LSTM" in ops) == (case == "lstm_in")
    assert ("Scan" in ops) == (case != "lstm_in")


def test_mc_cnn_and_dropconnect_in_distribution():
    rng = np.random.default_rng(27)
    m = Sequential([Input((8, 8, 2)), Conv2D(4, 3, padding="same"), BatchNormalization(),
                    Activation("relu"), SpatialDropout2D(0.3), MaxPooling2D(2),
                    Flatten(), Dropout(0.3, noise_shape=(None, 1)), Dense(8, drop_connect=0.3),
                    GaussianDropout(0.2), Dense(3)], seed=27)
    _randomize(m, rng, 2.0)
    _mc_matches_fastdrop(m, rng.normal(size=(4, 8, 8, 2)).astype(np.float32), T=1500)


# ====================================================================== refusals
def test_refusals(tmp_path):
    m = Sequential([Input((4,)), Dense(2)], seed=30)
    with pytest.raises(NotImplementedError, match="tf_saved_model"):
        m.export(str(tmp_path / "m"), format="tf_saved_model")
    with pytest.raises(ValueError, match="opset"):
        m.export(str(tmp_path / "m.onnx"), opset=16)
    with pytest.raises(ValueError, match="mc_dropout"):
        m.export(str(tmp_path / "m.onnx"), mc_dropout="yes")
    with pytest.raises(ValueError, match="directory"):
        m.export(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        m.export(str(tmp_path / "no" / "m.onnx"))
    with pytest.raises(ValueError, match="not built"):
        Sequential([Dense(2)]).export(str(tmp_path / "m.onnx"))
    with pytest.raises(TypeError, match="Sequential"):
        export_onnx(object(), str(tmp_path / "m.onnx"))
    assert not list(tmp_path.iterdir())


class _Custom(Layer):
    """A user's layer (runs in fastdrop, unknown to the exporter)."""
    kind = "my_custom"

    def make_stage(self):
        from fastdrop.engine.stage import IdentityStage
        return IdentityStage([self])


def test_unknown_layer_is_refused_by_name(tmp_path):
    m = Sequential([Input((4,)), Dense(2), _Custom(name="mine")], seed=31)
    m.predict(np.ones((1, 4), np.float32))
    with pytest.raises(NotImplementedError, match="'mine'.*_Custom"):
        m.export(str(tmp_path / "m.onnx"))
    assert not list(tmp_path.iterdir())


def test_missing_onnx_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    m = Sequential([Input((4,)), Dense(2)], seed=32)
    with pytest.raises(ImportError, match=r"fastdrop-engine\[onnx\]"):
        m.export(str(tmp_path / "m.onnx"))

"""The inference-only direct convolution (``_core.conv2d_infer``: conv + bias + relu
[+ max pooling] on prepacked weights, csrc/nn/conv_infer*.c) against the general path
(``conv2d_forward`` then ``pool2d_forward``, what TRAIN runs): bitwise equal outputs for
every geometry, thread counts 1 and 2 alike; against the NumPy reference within float
rounding; model-level: predict through the fused ConvPoolStage equals the training-mode
forward, and training is unchanged."""
import zlib

import numpy as np
import pytest

import fastdrop
from fastdrop import _core
from fastdrop.layers.conv import Conv2D, MaxPooling2D
from fastdrop.reference import conv as R

from test_conv import alloc

CASES = [
    # (n, h, w, c, filters, kernel, strides, padding, dilation, pool, pool strides, pool padding)
    (1, 28, 28, 1, 32, 3, 1, "valid", 1, 2, None, "valid"),      # mnist_convnet conv1
    (3, 13, 13, 32, 64, 3, 1, "valid", 1, 2, None, "valid"),     # conv2 (K = 288 > 32)
    (2, 9, 11, 3, 20, 3, 1, "same", 1, 2, None, "same"),         # Cin 3, Cout % 16 != 0
    (5, 10, 7, 5, 17, 3, 2, "same", 1, 3, 2, "valid"),           # stride 2, odd sizes
    (1, 12, 12, 7, 33, (2, 3), 1, "valid", (2, 1), 2, 1, "valid"),  # dilation, overlap
    (4, 8, 8, 16, 40, 3, 1, "same", 1, None, None, None),        # no pool, K = 144
    (2, 15, 31, 1, 8, 5, 1, "same", 1, None, None, None),        # Cin 1, wide rows (> 14)
    (3, 6, 6, 24, 48, 3, (1, 2), "same", 1, 2, None, "same"),    # K = 216, sw = 2
    (1, 7, 7, 40, 96, 3, 1, "valid", 1, None, None, None),       # runtime pixel stride
    # enough work for 2 threads: batch 1 / 3 split by channel blocks and rows
    (1, 30, 30, 32, 80, 3, 1, "valid", 1, 2, None, "valid"),
    (3, 16, 17, 32, 64, 3, 1, "same", 1, 3, 2, "same"),
    (1, 24, 24, 32, 64, 3, 1, "same", 1, None, None, None),
]


def _layers(case, rng):
    n, h, w, c, f, k, s, pad, dil, pool, ps, pp = case
    conv = Conv2D(f, k, strides=s, padding=pad, dilation_rate=dil, activation="relu")
    shape = conv.build((h, w, c))
    alloc(conv, rng)
    conv.bias[...] = rng.standard_normal(conv.bias.shape).astype(np.float32)
    mp = None
    if pool is not None:
        mp = MaxPooling2D(pool, strides=ps, padding=pp)
        mp.build(shape)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    return conv, mp, x


def _general(conv, mp, x, relu, bias):
    n = x.shape[0]
    g = conv.geometry(x.shape[1:], n)
    y = np.empty((n,) + (g[12], g[13], g[14]), np.float32)
    _core.conv2d_forward(g, x.reshape(-1), conv.kernel.reshape(-1), y.reshape(-1), bias, relu)
    if mp is None:
        return y
    pg = mp.geometry(y.shape[1:], n)
    out = np.empty((n, pg[10], pg[11], pg[3]), np.float32)
    arg = np.empty(out.shape, np.int32)
    _core.pool2d_forward(pg, True, y.reshape(-1), out.reshape(-1), arg.reshape(-1))
    return out


def _infer(conv, mp, x, relu, bias, shape):
    n = x.shape[0]
    g = conv.geometry(x.shape[1:], n)
    pg = None if mp is None else mp.geometry((g[12], g[13], g[14]), n)
    y = np.full((n,) + shape, np.nan, np.float32)
    ok = _core.conv2d_infer(g, pg, x.reshape(-1), conv.kernel.reshape(-1), y.reshape(-1),
                            bias, relu)
    return ok, y


@pytest.fixture
def threads():
    old = fastdrop.get_num_threads()
    yield
    fastdrop.set_num_threads(old)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_infer_bitwise_equals_general_path(case, relu, use_bias, threads):
    rng = np.random.default_rng(zlib.crc32(repr((case, relu, use_bias)).encode()))
    conv, mp, x = _layers(case, rng)
    bias = conv.bias if use_bias else None
    ref = _general(conv, mp, x, relu, bias)
    outs = []
    for nt in (1, 2):
        fastdrop.set_num_threads(nt)
        ok, y = _infer(conv, mp, x, relu, bias, ref.shape[1:])
        if not ok:
            pytest.skip("no direct inference path on this CPU")
        outs.append(y)
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    assert np.array_equal(outs[0].view(np.uint32), ref.view(np.uint32))
    # and the NumPy reference (float64) within float rounding
    n, h, w, c, f, k, s, pad, dil, pool, ps, pp = case
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    z = R.conv2d(x.astype(np.float64), conv.kernel.astype(np.float64),
                 None if bias is None else bias.astype(np.float64), strides=pair(s),
                 padding=pad, dilation=pair(dil))
    if relu:
        z = np.maximum(z, 0)
    if mp is not None:
        z = R.max_pool2d(z, pair(pool), None if ps is None else pair(ps), pp)
        z = z[0] if isinstance(z, tuple) else z
    np.testing.assert_allclose(outs[0], z, rtol=1e-4, atol=1e-4)


def test_infer_nan_and_signed_zero_like_general_path(threads):
    rng = np.random.default_rng(3)
    for case in (CASES[0], CASES[1]):
        conv, mp, x = _layers(case, rng)
        x.reshape(-1)[::37] = np.nan
        x.reshape(-1)[5::41] = -0.0
        conv.kernel.reshape(-1)[::53] = 0.0
        for relu in (True, False):
            ref = _general(conv, mp, x, relu, None)
            ok, y = _infer(conv, mp, x, relu, None, ref.shape[1:])
            if ok:
                assert np.array_equal(y.view(np.uint32), ref.view(np.uint32))


def test_infer_kc_blocks(monkeypatch):
    """K above the GEMM's KC block (several blocks summed in order) stays bitwise equal."""
    rng = np.random.default_rng(5)
    conv, mp, x = _layers((2, 9, 9, 64, 48, 3, 1, "same", 1, 2, None, "valid"), rng)  # K 576
    ref = _general(conv, mp, x, True, conv.bias)
    ok, y = _infer(conv, mp, x, True, conv.bias, ref.shape[1:])
    if ok:
        assert np.array_equal(y.view(np.uint32), ref.view(np.uint32))


def _convnet(seed=0, dropout=True):
    from fastdrop import layers as L
    from fastdrop.models import Sequential
    ls = [L.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
          L.Conv2D(64, 3), L.Activation("relu"), L.MaxPooling2D(2), L.Flatten()]
    if dropout:
        ls.append(L.Dropout(0.5))
    ls.append(L.Dense(10, activation="softmax"))
    return Sequential(ls, seed=seed)


@pytest.mark.parametrize("n", [1, 3, 256])
def test_model_predict_fused_equals_training_forward(n, threads):
    from fastdrop.engine.stages.conv import ConvPoolStage
    m = _convnet(dropout=False)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert sum(isinstance(s, ConvPoolStage) for s in m._stages) == 2
    x = np.random.default_rng(n).random((n, 28, 28, 1), dtype=np.float32)
    outs = []
    for nt in (1, 2):
        fastdrop.set_num_threads(nt)
        outs.append(m.predict(x))
        outs.append(m.predict(x, batch_size=2))
    train = np.asarray(m(x, training=True))
    for o in outs:
        assert np.array_equal(o.view(np.uint32), train.view(np.uint32))


def test_training_unchanged_and_predict_after_updates(threads):
    """fit goes through the separate conv and pool stages (argmax kept); predict after the
    weights change sees the new weights."""
    m = _convnet()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    p0 = m.predict(x[:4])
    m.fit(x, y, batch_size=32, epochs=1, verbose=0)
    p1 = m.predict(x[:4])
    assert not np.array_equal(p0, p1)
    m2 = _convnet(dropout=False)
    m2.set_weights(m.get_weights())
    np.testing.assert_array_equal(m2.predict(x[:4]), p1)
    mean, std = m.predict(x[:3], mc_samples=5, seed=1)
    assert mean.shape == (3, 10) and np.isfinite(std).all()

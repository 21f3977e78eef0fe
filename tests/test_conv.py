"""Conv2D, pooling, SpatialDropout2D and BatchNormalization: kernels and stages against
the NumPy reference (fastdrop.reference.conv), finite differences, thread invariance,
argument validation."""
import zlib

import numpy as np
import pytest

from fastdrop import _core
from fastdrop import initializers
from fastdrop.engine import INFER, MC, TRAIN, Arena, Context, make_plan
from fastdrop.engine.stages.conv import ConvStage, conv_fusion_rule
from fastdrop.layers.conv import (AveragePooling2D, BatchNormalization, Conv2D,
                                  GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D,
                                  SpatialDropout2D)
from fastdrop.reference import conv as R


# ---------------------------------------------------------------- helpers
def alloc(layer, rng):
    for v in layer.variables:
        v.value = np.ascontiguousarray(v.initializer(v.shape, rng).astype(np.float32))
        setattr(layer, v.name, v.value)
        if v.trainable:
            v.grad = np.zeros(v.shape, np.float32)
            setattr(layer, "d" + v.name, v.grad)


def build(layers, in_shape, rng, seed_index=1):
    shape = tuple(in_shape)
    for i, l in enumerate(layers):
        shape = l.build(shape)
        alloc(l, rng)
        if getattr(l, "noisy", False) or hasattr(l, "rate"):
            l.noise_index = seed_index + i
    return shape


def stages_for(layers, in_shape, capacity, fuse=True):
    if fuse:
        plan = [s for s, _, _ in make_plan(layers)]
    else:
        plan = [l.make_stage() for l in layers]
    shape = tuple(in_shape)
    for s in plan:
        shape = s.bind(shape)
    Arena().allocate(plan, capacity)
    return plan


def forward(plan, ctx, x):
    h = x
    for s in plan:
        h = s.forward(ctx, h)
    return h


def backward(plan, ctx, dy, need_dx=True):
    g = dy
    for k in range(len(plan) - 1, -1, -1):
        g = plan[k].backward(ctx, g, need_dx or k > 0)
    return g


def rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def keep_bits(bits, n):
    return np.unpackbits(np.asarray(bits), count=n, bitorder="little").astype(bool)


# ---------------------------------------------------------------- conv grid
# (n, h, w, c, k, filters, strides, padding, dilation): a sample of the full grid
# (odd sizes, both paddings, strides 1/2, kernels 1/3/5, channels 1/3/17/64, dilation)
CONV_CASES = [
    (2, 7, 9, 1, 3, 3, 1, "valid", 1),
    (2, 7, 9, 3, 3, 17, 1, "same", 1),
    (3, 11, 8, 17, 5, 4, 2, "valid", 1),
    (2, 9, 7, 3, 5, 64, 2, "same", 1),
    (2, 6, 5, 64, 1, 3, 1, "valid", 1),
    (1, 5, 7, 17, 1, 17, 2, "same", 1),
    (2, 9, 9, 3, 3, 3, 1, "same", 2),
    (1, 11, 10, 1, 3, 64, 1, "valid", 2),
    (2, 8, 7, 64, 3, 17, 2, "same", 1),
    (3, 13, 13, 1, 5, 1, 1, "same", 1),
    (2, 5, 5, 3, (3, 1), 5, (2, 1), "same", 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_backward_matches_reference(case):
    n, h, w, c, k, f, s, pad, d = case
    # a seed that is the same in every process (str hashes are salted per process)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    conv = Conv2D(f, k, strides=s, padding=pad, dilation_rate=d,
                  bias_initializer="glorot_uniform")
    out_shape = build([conv], (h, w, c), rng)
    assert conv.kernel.shape == conv.kernel_size + (c, f)   # Keras layout (kh, kw, in, out)
    plan = stages_for([conv], (h, w, c), n)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    yr = R.conv2d(x, conv.kernel, conv.bias, conv.strides, pad, conv.dilation_rate)
    assert y.shape == (n,) + out_shape == yr.shape
    assert rel(y, yr) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dxr, dwr, dbr = R.conv2d_backward(x, conv.kernel, dy, conv.strides, pad,
                                      conv.dilation_rate)
    assert rel(dx, dxr) < 1e-5
    assert rel(conv.dkernel, dwr) < 1e-5
    # db sums n*oh*ow values of dy per filter: bound its error by the sum of their
    # magnitudes (a single filter's sum can cancel to near zero, where a relative error
    # against the result itself means nothing)
    mag = np.abs(dy.astype(np.float64)).reshape(-1, f).sum(0)
    assert np.all(np.abs(conv.dbias - dbr) <= 1e-5 * np.maximum(np.abs(dbr), mag))


def test_conv2d_relu_no_bias_and_large_batch_chunks():
    # several chunks (M > chunk rows) with an odd filter count and element dropout
    rng = np.random.default_rng(1)
    n = 10
    conv = Conv2D(3, 3, activation="relu", use_bias=False)
    build([conv], (28, 28, 1), rng)
    assert [v.name for v in conv.variables] == ["kernel"]
    plan = stages_for([conv], (28, 28, 1), n)
    x = rng.standard_normal((n, 28, 28, 1)).astype(np.float32)
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    z = R.conv2d(x, conv.kernel)
    assert rel(y, np.maximum(z, 0)) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dxr, dwr, _ = R.conv2d_backward(x, conv.kernel, np.where(z > 0, dy, 0))
    assert rel(dx, dxr) < 1e-5 and rel(conv.dkernel, dwr) < 1e-5


# ---------------------------------------------------------------- fusion + dropout
from fastdrop.layers import Activation, Dropout  # noqa: E402


def _dropout_cls():
    return Dropout


def _activation_cls():
    return Activation


@pytest.mark.parametrize("linear_then_act", [False, True])
@pytest.mark.parametrize("spatial", [False, True])
def test_fused_conv_relu_dropout(linear_then_act, spatial):
    rng = np.random.default_rng(2)
    n, h, w, c, f, rate = 9, 12, 11, 3, 5, 0.4
    if linear_then_act:
        layers = [Conv2D(f, 3, padding="same"), _activation_cls()("relu")]
    else:
        layers = [Conv2D(f, 3, padding="same", activation="relu")]
    drop = SpatialDropout2D(rate, seed=7) if spatial else _dropout_cls()(rate, seed=7)
    layers.append(drop)
    build(layers, (h, w, c), rng)
    plan = stages_for(layers, (h, w, c), n)
    assert len(plan) == 1 and isinstance(plan[0], ConvStage) and plan[0].noisy
    conv = layers[0]
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    ctx = Context(TRAIN, n, step=3, seed=11)
    y = forward(plan, ctx, x)
    # the same keep bits as the stage drew
    per = f if spatial else h * w * f
    bits = ctx.mask(np.zeros((n * per + 7) // 8 + 8, np.uint8), rate, per, drop.noise_index,
                    drop.seed)
    keep = keep_bits(bits, n * per)
    keep = keep.reshape(n, 1, 1, f) if spatial else keep.reshape(n, h, w, f)
    scale = np.float32(1.0 / (1.0 - rate))
    z = R.conv2d(x, conv.kernel, conv.bias, padding="same")
    yr = np.where(keep, np.maximum(z, 0) * scale, 0)
    assert rel(y, yr) < 1e-5
    if spatial:  # whole feature maps dropped
        assert np.all((y == 0).all(axis=(1, 2)) | keep[:, 0, 0, :])
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dz = np.where(keep & (z > 0), dy * scale, 0)
    dxr, dwr, dbr = R.conv2d_backward(x, conv.kernel, dz, padding="same")
    assert rel(dx, dxr) < 1e-5 and rel(conv.dkernel, dwr) < 1e-5 and rel(conv.dbias, dbr) < 1e-5
    # INFER: no noise
    y2 = forward(plan, Context(INFER, n), x)
    assert rel(y2, np.maximum(z, 0)) < 1e-5


@pytest.mark.parametrize("spatial", [False, True])
def test_fused_linear_conv_dropout_backward(spatial):
    rng = np.random.default_rng(3)
    n, h, w, c, f, rate = 4, 7, 6, 2, 9, 0.5
    drop = SpatialDropout2D(rate) if spatial else _dropout_cls()(rate)
    layers = [Conv2D(f, 2, strides=2, padding="same"), drop]
    build(layers, (h, w, c), rng)
    plan = stages_for(layers, (h, w, c), n)
    assert len(plan) == 1
    conv = layers[0]
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    ctx = Context(TRAIN, n, step=1, seed=5)
    y = forward(plan, ctx, x)
    oh, ow = y.shape[1:3]
    per = f if spatial else oh * ow * f
    keep = keep_bits(ctx.mask(np.zeros(n * per, np.uint8), rate, per, drop.noise_index,
                              drop.seed), n * per)
    keep = keep.reshape(n, 1, 1, f) if spatial else keep.reshape(n, oh, ow, f)
    z = R.conv2d(x, conv.kernel, conv.bias, (2, 2), "same")
    assert rel(y, np.where(keep, z * 2, 0)) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dxr, dwr, dbr = R.conv2d_backward(x, conv.kernel, np.where(keep, dy * 2, 0), (2, 2), "same")
    assert rel(dx, dxr) < 1e-5 and rel(conv.dkernel, dwr) < 1e-5 and rel(conv.dbias, dbr) < 1e-5


def test_fusion_rule_cases():
    D = _dropout_cls()
    c = Conv2D(2, 3)
    assert conv_fusion_rule([c], 0) is None                   # alone: its own stage
    assert conv_fusion_rule([c, D(0.2)], 0)[1] == 2
    assert conv_fusion_rule([c, _activation_cls()("relu"), D(0.2)], 0)[1] == 3
    cr = Conv2D(2, 3, activation="relu")
    assert conv_fusion_rule([cr, _activation_cls()("relu")], 0) is None  # relu on relu: no
    assert conv_fusion_rule([cr, SpatialDropout2D(0.1)], 0)[1] == 2
    assert conv_fusion_rule([MaxPooling2D(), D(0.2)], 0) is None


def test_spatial_dropout_statistics_and_mc():
    rng = np.random.default_rng(4)
    n, h, w, c, rate = 200, 3, 4, 64, 0.3
    sd = SpatialDropout2D(rate)
    build([sd], (h, w, c), rng)
    plan = stages_for([sd], (h, w, c), n)
    x = rng.uniform(0.5, 1.5, (n, h, w, c)).astype(np.float32)
    ctx = Context(TRAIN, n, step=0, seed=123)
    y = forward(plan, ctx, x)
    kept = (y != 0)
    # one decision per (sample, channel): a map is all kept or all dropped
    per_map = kept.reshape(n, h * w, c)
    assert np.all(per_map.all(axis=1) | ~per_map.any(axis=1))
    frac_dropped = 1 - per_map[:, 0, :].mean()
    sigma = np.sqrt(rate * (1 - rate) / (n * c))
    assert abs(frac_dropped - rate) < 5 * sigma
    scale = np.float32(1 / (1 - rate))
    np.testing.assert_array_equal(y[kept], x[kept] * scale)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    np.testing.assert_array_equal(dx, np.where(kept, dy * scale, 0))
    # INFER: identity; MC: noise
    np.testing.assert_array_equal(forward(plan, Context(INFER, n), x), x)
    ymc = forward(plan, Context(MC, n, seed=9), x)
    assert (ymc == 0).any()


# ---------------------------------------------------------------- pooling
POOL_CASES = [
    ((7, 9, 3), (2, 2), None, "valid"),
    ((7, 9, 3), (2, 2), None, "same"),
    ((8, 8, 17), (3, 3), (2, 2), "same"),
    ((9, 7, 1), (3, 2), (1, 1), "valid"),
    ((5, 6, 64), (3, 3), (2, 1), "same"),
]


@pytest.mark.parametrize("is_max", [True, False])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_matches_reference(case, is_max):
    shape, pool, strides, pad = case
    rng = np.random.default_rng(5)
    n = 3
    layer = (MaxPooling2D if is_max else AveragePooling2D)(pool, strides, pad)
    build([layer], shape, rng)
    plan = stages_for([layer], shape, n)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    x[0, :2, :2, 0] = 1.0              # ties: the first index wins
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    if is_max:
        yr, arg = R.max_pool2d(x, pool, strides, pad)
        dxr = R.max_pool2d_backward(x.shape, arg, dy)
        np.testing.assert_array_equal(y, yr.astype(np.float32))
        np.testing.assert_array_equal(plan[0].buf["arg"][:n], arg)
    else:
        yr = R.avg_pool2d(x, pool, strides, pad)
        dxr = R.avg_pool2d_backward(x.shape, dy, pool, strides, pad)
    assert y.shape == yr.shape
    assert rel(y, yr) < 1e-6 and rel(dx, dxr) < 1e-6


@pytest.mark.parametrize("is_max", [True, False])
def test_global_pooling(is_max):
    rng = np.random.default_rng(6)
    n, shape = 4, (5, 3, 17)
    layer = GlobalMaxPooling2D() if is_max else GlobalAveragePooling2D()
    assert build([layer], shape, rng) == (17,)
    plan = stages_for([layer], shape, n)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    if is_max:
        yr, arg = R.global_max_pool2d(x)
        dxr = R.global_max_pool2d_backward(x.shape, arg, dy)
    else:
        yr = R.global_avg_pool2d(x)
        dxr = R.global_avg_pool2d_backward(x.shape, dy)
    assert rel(y, yr) < 1e-6 and rel(dx, dxr) < 1e-6
    assert GlobalAveragePooling2D(keepdims=True).build(shape) == (1, 1, 17)


# ---------------------------------------------------------------- batch normalisation
@pytest.mark.parametrize("shape", [(6, 5, 17), (33,), (4, 3)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_batchnorm_train_infer_and_moving_stats(shape, center, scale):
    rng = np.random.default_rng(7)
    n = 7
    bn = BatchNormalization(momentum=0.9, epsilon=1e-3, center=center, scale=scale,
                            gamma_initializer="glorot_uniform",
                            beta_initializer="glorot_uniform")
    build([bn], shape, rng)
    names = [v.name for v in bn.variables]
    assert names == (["gamma"] if scale else []) + (["beta"] if center else []) + \
        ["moving_mean", "moving_variance"]
    assert [v.trainable for v in bn.variables][-2:] == [False, False]
    plan = stages_for([bn], shape, n)
    x = (rng.standard_normal((n,) + shape) * 3 + 1).astype(np.float32)
    gamma = bn.gamma.copy() if scale else None
    beta = bn.beta.copy() if center else None
    mm0, mv0 = bn.moving_mean.copy(), bn.moving_variance.copy()
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    yr, mean, var = R.batchnorm_train(x, gamma, beta, 1e-3)
    assert rel(y, yr) < 1e-5
    emm, emv = R.batchnorm_moving_update(mm0.astype(np.float64), mv0.astype(np.float64),
                                         mean, var, 0.9)
    assert rel(bn.moving_mean, emm) < 1e-5 and rel(bn.moving_variance, emv) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dxr, dgr, dbr = R.batchnorm_backward(x, dy, gamma, 1e-3)
    assert rel(dx, dxr) < 1e-4
    if scale:
        assert rel(bn.dgamma, dgr) < 1e-5
    if center:
        assert rel(bn.dbeta, dbr) < 1e-5
    # INFER and MC use the moving statistics and leave them alone
    mm1, mv1 = bn.moving_mean.copy(), bn.moving_variance.copy()
    for mode in (INFER, MC):
        yi = forward(plan, Context(mode, n), x)
        assert rel(yi, R.batchnorm_infer(x, mm1, mv1, gamma, beta, 1e-3)) < 1e-5
        np.testing.assert_array_equal(bn.moving_mean, mm1)


def test_batchnorm_frozen_runs_in_inference_mode():
    rng = np.random.default_rng(8)
    n, shape = 5, (3, 3, 4)
    bn = BatchNormalization(trainable=False, moving_variance_initializer="glorot_uniform")
    build([bn], shape, rng)
    bn.moving_variance[...] = np.abs(bn.moving_variance) + 0.5
    plan = stages_for([bn], shape, n)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    mm = bn.moving_mean.copy()
    ctx = Context(TRAIN, n)
    y = forward(plan, ctx, x)
    assert rel(y, R.batchnorm_infer(x, bn.moving_mean, bn.moving_variance, bn.gamma,
                                    bn.beta)) < 1e-5
    np.testing.assert_array_equal(bn.moving_mean, mm)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    dxr, _, _ = R.batchnorm_backward(x, dy, bn.gamma, 1e-3, bn.moving_mean, bn.moving_variance)
    assert rel(dx, dxr) < 1e-5


# ---------------------------------------------------------------- finite differences
def test_finite_differences_conv_pool_bn_stack():
    """conv(relu) + Dropout (masks fixed) -> maxpool -> BN -> loss = Σ y·r, float64
    reference by central differences vs the stages' gradients."""
    rng = np.random.default_rng(9)
    n, shape, rate = 3, (7, 6, 2), 0.25
    conv = Conv2D(3, 3, padding="same", activation="relu")
    drop = _dropout_cls()(rate, seed=3)
    pool = MaxPooling2D(2, padding="same")
    bn = BatchNormalization(gamma_initializer="glorot_uniform")
    layers = [conv, drop, pool, bn]
    out_shape = build(layers, shape, rng)
    plan = stages_for(layers, shape, n)
    assert len(plan) == 3
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    r = rng.standard_normal((n,) + out_shape)
    ctx = Context(TRAIN, n, step=2, seed=1)
    mm0, mv0 = bn.moving_mean.copy(), bn.moving_variance.copy()
    forward(plan, ctx, x)
    per = 7 * 6 * 3
    keep = keep_bits(ctx.mask(np.zeros(n * per, np.uint8), rate, per, drop.noise_index,
                              drop.seed), n * per).reshape(n, 7, 6, 3)
    scale = float(np.float32(1 / (1 - rate)))
    dx = backward(plan, ctx, r.astype(np.float32))

    def loss(xv, w, b, g, be):
        z = R.conv2d(xv, w, b, padding="same")
        a = np.where(keep, np.maximum(z, 0) * scale, 0)
        p, _ = R.max_pool2d(a, (2, 2), None, "same")
        y, _, _ = R.batchnorm_train(p, g, be)
        return float((y * r).sum())

    params = [x.astype(np.float64), conv.kernel.astype(np.float64),
              conv.bias.astype(np.float64), bn.gamma.astype(np.float64),
              bn.beta.astype(np.float64)]
    grads = [dx, conv.dkernel, conv.dbias, bn.dgamma, bn.dbeta]
    eps = 1e-6
    for pi, (p, g) in enumerate(zip(params, grads)):
        idx = rng.choice(p.size, size=min(p.size, 12), replace=False)
        for k in idx:
            pp = [q.copy() for q in params]
            pp[pi].flat[k] += eps
            lp = loss(*pp)
            pp[pi].flat[k] -= 2 * eps
            lm = loss(*pp)
            num = (lp - lm) / (2 * eps)
            assert abs(num - g.flat[k]) < 2e-3 * (1 + abs(num)), (pi, k, num, g.flat[k])
    assert not np.array_equal(bn.moving_mean, mm0) and not np.array_equal(bn.moving_variance, mv0)


# ---------------------------------------------------------------- threads
def test_one_and_two_threads_bitwise():
    rng = np.random.default_rng(10)
    n, shape = 37, (15, 13, 3)
    layers = [Conv2D(17, 3, activation="relu"), _dropout_cls()(0.3),
              MaxPooling2D(2, padding="same"), BatchNormalization(),
              Conv2D(8, 1), AveragePooling2D(2), SpatialDropout2D(0.2)]
    build(layers, shape, rng)
    plan = stages_for(layers, shape, n)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    state = [(v.value.copy()) for l in layers for v in l.variables]
    dy = None
    results = []
    old = _core.get_num_threads()
    try:
        for nt in (1, 2):
            _core.set_num_threads(nt)
            k = 0
            for l in layers:
                for v in l.variables:
                    v.value[...] = state[k]
                    k += 1
            ctx = Context(TRAIN, n, step=4, seed=2)
            y = forward(plan, ctx, x).copy()
            if dy is None:
                dy = rng.standard_normal(y.shape).astype(np.float32)
            dx = backward(plan, ctx, dy).copy()
            grads = [v.grad.copy() for l in layers for v in l.variables if v.trainable]
            moving = [l.moving_mean.copy() for l in layers if isinstance(l, BatchNormalization)]
            results.append((y, dx, grads, moving))
    finally:
        _core.set_num_threads(old)
    (y1, dx1, g1, m1), (y2, dx2, g2, m2) = results
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    for a, b in zip(g1 + m1, g2 + m2):
        np.testing.assert_array_equal(a, b)


def test_big_conv_threads_bitwise():
    # more rows than one chunk, several backward units
    rng = np.random.default_rng(11)
    g = (40, 13, 13, 32, 3, 3, 1, 1, 1, 1, 0, 0, 11, 11, 64)
    x = rng.standard_normal(40 * 13 * 13 * 32).astype(np.float32)
    w = rng.standard_normal(9 * 32 * 64).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    dz = rng.standard_normal(40 * 121 * 64).astype(np.float32)
    outs = []
    old = _core.get_num_threads()
    try:
        for nt in (1, 2):
            _core.set_num_threads(nt)
            y = np.empty(40 * 121 * 64, np.float32)
            _core.conv2d_forward(g, x, w, y, b, True)
            dw = np.empty_like(w)
            db = np.empty_like(b)
            dx = np.empty_like(x)
            _core.conv2d_backward(g, dz, x, w, dw, db, dx)
            outs.append((y, dw, db, dx))
    finally:
        _core.set_num_threads(old)
    for a, b2 in zip(*outs):
        np.testing.assert_array_equal(a, b2)


# ---------------------------------------------------------------- arguments and layout
def test_bad_arguments():
    with pytest.raises(ValueError, match="filters"):
        Conv2D(0, 3)
    with pytest.raises(ValueError, match="filters"):
        Conv2D(-2, 3)
    with pytest.raises(ValueError, match="strides"):
        Conv2D(4, 3, strides=0)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(4, (3, 0))
    with pytest.raises(ValueError, match="dilation_rate"):
        Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="padding"):
        Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="activation"):
        Conv2D(4, 3, activation="bogus")
    with pytest.raises(ValueError, match="larger than its input"):
        Conv2D(4, 5).build((4, 9, 1))
    with pytest.raises(ValueError, match="larger than its input"):
        Conv2D(4, 3, dilation_rate=3).build((6, 6, 1))
    Conv2D(4, 5, padding="same").build((4, 9, 1))       # padded: fits
    with pytest.raises(ValueError, match=r"\(784,\)"):
        Conv2D(4, 3).build((784,))
    with pytest.raises(ValueError, match="pool_size"):
        MaxPooling2D(3).build((2, 5, 1))
    with pytest.raises(ValueError, match="strides"):
        MaxPooling2D(2, strides=0)
    with pytest.raises(ValueError, match="rate"):
        SpatialDropout2D(1.0)
    with pytest.raises(ValueError, match="axis"):
        BatchNormalization(axis=1).build((4, 4, 3))
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=2.0)
    with pytest.raises(ValueError):   # geometry checked by the binding too
        _core.conv2d_forward((1, 4, 4, 1, 3, 3, 1, 1, 1, 1, 0, 0, 2, 2, 2),
                             np.zeros(15, np.float32), np.zeros(18, np.float32),
                             np.zeros(8, np.float32))


def test_config_round_trip_and_shapes():
    from fastdrop.constraints import MaxNorm
    from fastdrop.regularizers import l2
    c = Conv2D(32, (3, 5), strides=(2, 1), padding="same", activation="relu",
               use_bias=False, kernel_initializer="he_normal", input_shape=(28, 28, 1),
               kernel_regularizer=l2(1e-4), kernel_constraint=MaxNorm(3))
    c2 = Conv2D(**c.get_config())
    assert c2.get_config() == c.get_config()
    assert c.build((28, 28, 1)) == (14, 28, 32)
    assert c.count_params() == 3 * 5 * 32
    for cls, kw in ((MaxPooling2D, dict(pool_size=3, strides=2, padding="same")),
                    (AveragePooling2D, {}), (GlobalMaxPooling2D, {}),
                    (SpatialDropout2D, dict(rate=0.2, seed=3)),
                    (BatchNormalization, dict(momentum=0.9, center=False))):
        layer = cls(**kw)
        assert cls(**layer.get_config()).get_config() == layer.get_config()
    assert MaxPooling2D(3, strides=2, padding="same").build((7, 8, 2)) == (4, 4, 2)
    assert MaxPooling2D().build((7, 9, 2)) == (3, 4, 2)
    # Keras 'same': the extra padding row/column goes at the bottom/right
    assert R.same_padding(6, 3, 2) == (0, 1, 3)
    assert Conv2D(1, 3, strides=2, padding="same").geometry((6, 6, 1))[10:12] == (0, 0)
    # seed-003 CNN conv layer parameter count (Keras: 320)
    s = Conv2D(32, (3, 3), activation="relu")
    s.build((28, 28, 1))
    assert s.count_params() == 320


def test_conv_kernel_initializer_fans():
    rng = np.random.default_rng(0)
    w = initializers.glorot_uniform((3, 3, 16, 32), rng)
    limit = np.sqrt(6.0 / (9 * 16 + 9 * 32))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit


@pytest.mark.parametrize("isa", _core.isa_supported())
def test_every_isa_path_matches_reference(isa):
    """The small-K direct kernels and the GEMM path on each ISA the CPU runs."""
    rng = np.random.default_rng(12)
    old = _core.isa()
    try:
        _core.set_isa(isa)
        for (n, h, w, c, k, f, s, pad, d) in [(3, 9, 8, 1, 3, 37, 1, "same", 1),
                                              (2, 8, 9, 3, 3, 5, 2, "valid", 1),
                                              (2, 7, 7, 2, 3, 16, 1, "same", 2),
                                              (2, 7, 6, 8, 3, 20, 1, "same", 1)]:
            conv = Conv2D(f, k, strides=s, padding=pad, dilation_rate=d, activation="relu",
                          bias_initializer="glorot_uniform")
            build([conv], (h, w, c), rng)
            plan = stages_for([conv], (h, w, c), n)
            x = rng.standard_normal((n, h, w, c)).astype(np.float32)
            ctx = Context(TRAIN, n)
            y = forward(plan, ctx, x)
            z = R.conv2d(x, conv.kernel, conv.bias, conv.strides, pad, conv.dilation_rate)
            assert rel(y, np.maximum(z, 0)) < 1e-5, (isa, n, h, w, c, k, f)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            dx = backward(plan, ctx, dy)
            dxr, dwr, dbr = R.conv2d_backward(x, conv.kernel, np.where(z > 0, dy, 0),
                                              conv.strides, pad, conv.dilation_rate)
            assert rel(dx, dxr) < 1e-5 and rel(conv.dkernel, dwr) < 1e-5
            assert rel(conv.dbias, dbr) < 1e-5
    finally:
        _core.set_isa(old)


@pytest.mark.parametrize("isa", _core.isa_supported())
@pytest.mark.parametrize("pad", ["valid", "same"])
def test_first_layer_backward_without_dx(isa, pad):
    """ReLU (+dropout) conv, small K, no dx: the relu backward is folded into the direct
    dW kernel (dz never written); dW and db against the reference."""
    rng = np.random.default_rng(13)
    n, shape, rate = 11, (28, 27, 1), 0.25
    old = _core.isa()
    try:
        _core.set_isa(isa)
        layers = [Conv2D(37, 3, padding=pad, activation="relu",
                         bias_initializer="glorot_uniform"), Dropout(rate, seed=1)]
        build(layers, shape, rng)
        conv, drop = layers
        plan = stages_for(layers, shape, n)
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        ctx = Context(TRAIN, n, step=1, seed=3)
        y = forward(plan, ctx, x)
        per = int(np.prod(y.shape[1:]))
        keep = keep_bits(ctx.mask(np.zeros(n * per, np.uint8), rate, per, drop.noise_index,
                                  drop.seed), n * per).reshape(y.shape)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        grads = []
        nt0 = _core.get_num_threads()
        for nt in (1, 2):
            _core.set_num_threads(nt)
            try:
                assert plan[0].backward(ctx, dy, False) is None
            finally:
                _core.set_num_threads(nt0)
            grads.append((conv.dkernel.copy(), conv.dbias.copy()))
        np.testing.assert_array_equal(grads[0][0], grads[1][0])   # bitwise, 1 vs 2 threads
        np.testing.assert_array_equal(grads[0][1], grads[1][1])
        z = R.conv2d(x, conv.kernel, conv.bias, padding=pad)
        dz = np.where(keep & (z > 0), dy * np.float32(1 / (1 - rate)), 0)
        _, dwr, dbr = R.conv2d_backward(x, conv.kernel, dz, padding=pad)
        assert rel(conv.dkernel, dwr) < 1e-5 and rel(conv.dbias, dbr) < 1e-5
    finally:
        _core.set_isa(old)


def test_mc_dropout_bn_network_independent_of_other_samples():
    """MC mode: BN uses the moving statistics and masks are keyed by the global sample
    index, so a sample's output does not depend on the other samples in the call."""
    rng = np.random.default_rng(14)
    shape = (9, 8, 2)
    layers = [Conv2D(6, 3, activation="relu"), SpatialDropout2D(0.3),
              BatchNormalization(), MaxPooling2D(), Conv2D(4, 1), Dropout(0.4)]
    build(layers, shape, rng)
    bn = layers[2]
    bn.moving_mean[...] = rng.standard_normal(6)
    bn.moving_variance[...] = rng.uniform(0.5, 2, 6)
    x = rng.standard_normal((6,) + shape).astype(np.float32)
    plan = stages_for(layers, shape, 6)
    full = forward(plan, Context(MC, 6, seed=5, offset=0), x).copy()
    part = forward(plan, Context(MC, 3, seed=5, offset=3), x[3:]).copy()
    np.testing.assert_array_equal(full[3:], part)
    assert not np.array_equal(full, forward(plan, Context(INFER, 6), x))


@pytest.mark.parametrize("tail", ["none", "relu", "relu+dropout", "spatial"])
def test_conv_bn_fused_stage(tail):
    """Conv2D + BN [+ relu] [+ dropout]: TRAIN exact through the batch statistics,
    INFER / MC with BN folded into the convolution."""
    from fastdrop.engine.stages.conv import ConvBNStage
    rng = np.random.default_rng(15)
    n, shape, f, rate = 5, (8, 9, 3), 6, 0.3
    conv = Conv2D(f, 3, padding="same", bias_initializer="glorot_uniform")
    bn = BatchNormalization(momentum=0.8, gamma_initializer="glorot_uniform",
                            beta_initializer="glorot_uniform")
    layers = [conv, bn]
    if "relu" in tail:
        layers.append(Activation("relu"))
    drop = None
    if "dropout" in tail:
        drop = Dropout(rate)
    elif tail == "spatial":
        drop = SpatialDropout2D(rate)
    if drop is not None:
        layers.append(drop)
    build(layers, shape, rng)
    plan = stages_for(layers, shape, n)
    assert len(plan) == 1 and isinstance(plan[0], ConvBNStage)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    mm0, mv0 = bn.moving_mean.copy(), bn.moving_variance.copy()
    relu = "relu" in tail
    scale = np.float32(1 / (1 - rate))

    def keep_of(ctx, y):
        if drop is None:
            return np.ones(y.shape, bool)
        per = f if tail == "spatial" else int(np.prod(y.shape[1:]))
        k = keep_bits(ctx.mask(np.zeros(n * per + 8, np.uint8), rate, per, drop.noise_index,
                               drop.seed), n * per)
        return k.reshape(n, 1, 1, f) if tail == "spatial" else k.reshape(y.shape)

    ctx = Context(TRAIN, n, step=2, seed=4)
    y = forward(plan, ctx, x)
    keep = keep_of(ctx, y)
    sc = scale if drop is not None else 1.0
    z = R.conv2d(x, conv.kernel, conv.bias, padding="same")
    u, mean, var = R.batchnorm_train(z, bn.gamma, bn.beta)
    a = np.maximum(u, 0) if relu else u
    assert rel(y, np.where(keep, a * sc, 0)) < 1e-5
    emm, emv = R.batchnorm_moving_update(mm0, mv0, mean, var, 0.8)
    assert rel(bn.moving_mean, emm) < 1e-5 and rel(bn.moving_variance, emv) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = backward(plan, ctx, dy)
    du = np.where(keep & ((u > 0) if relu else True), dy * sc, 0)
    dz, dgr, dbr = R.batchnorm_backward(z, du, bn.gamma)
    dxr, dwr, dbcr = R.conv2d_backward(x, conv.kernel, dz, padding="same")
    assert rel(bn.dgamma, dgr) < 1e-4 and rel(bn.dbeta, dbr) < 1e-4
    assert rel(conv.dkernel, dwr) < 1e-4
    # the conv bias gradient before BN is 0 in exact arithmetic: float noise only
    assert np.abs(conv.dbias - dbcr).max() < 1e-6 * np.abs(du).sum()
    assert rel(dx, dxr) < 1e-4
    for mode in (INFER, MC):
        c2 = Context(mode, n, seed=8)
        yi = forward(plan, c2, x)
        ki = keep_of(c2, yi) if mode == MC else np.ones(yi.shape, bool)
        ui = R.batchnorm_infer(z, bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)
        ai = np.maximum(ui, 0) if relu else ui
        assert rel(yi, np.where(ki, ai * (sc if mode == MC else 1.0), 0)) < 1e-5

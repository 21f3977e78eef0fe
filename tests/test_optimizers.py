"""Optimizers, clipping and learning-rate schedules against an independent float64 NumPy
implementation of Keras 3's formulas (fastdrop.reference.optimizers), plus state round
trips, thread invariance and the argument contract."""
import json
import math

import numpy as np
import pytest

from fastdrop import _core, optimizers as O, schedules as S
from fastdrop.reference import optimizers as RO

# a little model's variables: kernel, bias, kernel, bias
SHAPES = [(37, 13), (13,), (13, 5), (5,)]


def _segments():
    segs, lo = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        segs.append((lo, lo + n))
        lo += n
    return segs, lo


SEGS, N = _segments()


def _split(block):
    return [np.asarray(block[a:b], np.float64).copy() for a, b in SEGS]


KINDS = {
    "sgd": dict(learning_rate=0.05),
    "sgd_momentum": dict(learning_rate=0.05, momentum=0.9),
    "sgd_nesterov": dict(learning_rate=0.05, momentum=0.9, nesterov=True),
    "adam": dict(learning_rate=0.01),
    "adamw": dict(learning_rate=0.01),
    "rmsprop": dict(learning_rate=0.01),
    "rmsprop_momentum": dict(learning_rate=0.01, momentum=0.8, rho=0.85),
    "rmsprop_centered": dict(learning_rate=0.01, centered=True),
    "rmsprop_centered_momentum": dict(learning_rate=0.01, centered=True, momentum=0.5),
    "adagrad": dict(learning_rate=0.05),
    "adagrad_init": dict(learning_rate=0.05, initial_accumulator_value=0.5, epsilon=1e-6),
    "adadelta": dict(learning_rate=1.0),
    "adadelta_rho": dict(learning_rate=0.5, rho=0.8),
    "nadam": dict(learning_rate=0.01),
    "nadam_betas": dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99),
}
CLASSES = {"sgd": O.SGD, "adam": O.Adam, "adamw": O.AdamW, "rmsprop": O.RMSprop,
           "adagrad": O.Adagrad, "adadelta": O.Adadelta, "nadam": O.Nadam}
CLIPS = {"none": {}, "clipnorm": dict(clipnorm=0.5), "clipvalue": dict(clipvalue=0.05),
         "global_clipnorm": dict(global_clipnorm=1.0), "weight_decay": dict(weight_decay=0.1)}


def _make(kind, extra):
    base = kind.split("_")[0]
    hp = dict(KINDS[kind], **extra)
    return base, CLASSES[base](**hp), hp


def _grads(step, scale=0.3):
    g = np.random.default_rng(100 + step).standard_normal(N) * scale
    g[::7] *= 10  # some large elements: clipvalue and the norms bite
    return g.astype(np.float32)


def _run(opt, w, steps, segments=SEGS, start=0):
    for s in range(start, start + steps):
        g = _grads(s)
        g0 = g.copy()
        opt.apply(w, g, segments)
        np.testing.assert_array_equal(g, g0)   # the gradients are never modified


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_keras_formulas(kind, clip):
    base, opt, hp = _make(kind, CLIPS[clip])
    if base == "adamw":
        hp.setdefault("weight_decay", 0.004)
    w = np.random.default_rng(1).standard_normal(N).astype(np.float32) * 0.5
    w0 = _split(w)
    opt.build(N)
    ref_w = _split(w)
    slots = RO.init_slots(base, ref_w, **hp)
    lr = hp.pop("learning_rate")
    for t in range(1, 6):
        g = _grads(t - 1)
        opt.apply(w, g, SEGS)
        RO.step(base, ref_w, _split(g), slots, t, lr, **hp)
    assert opt.iterations == 5
    # compare the total change of the weights (float32 rounding of w itself aside)
    for a, b, c in zip(_split(w), ref_w, w0):
        da, db = a - c, b - c
        scale = np.abs(db).max()
        assert scale > 0
        np.testing.assert_allclose(da, db, rtol=1e-4, atol=1e-4 * scale)
    # the state block holds Keras's slots in order
    names = {"sgd": ["velocity"], "adam": ["m", "v"], "adamw": ["m", "v"],
             "nadam": ["m", "v"], "adagrad": ["accumulator"],
             "adadelta": ["accumulated_grad", "accumulated_delta_var"],
             "rmsprop": ["velocity"] + (["momentum"] if hp.get("momentum") else [])
             + (["average_gradient"] if hp.get("centered") else [])}[base]
    if base == "sgd" and not hp.get("momentum"):
        names = []
    assert opt.state().shape == (len(names), N)
    for k, name in enumerate(names):
        ref = np.concatenate([a.ravel() for a in slots[name]])
        np.testing.assert_allclose(opt.state()[k], ref, rtol=1e-4, atol=1e-7)


def test_clipping_is_active_in_the_test_data():
    g = [np.asarray(a) for a in _split(_grads(0))]
    assert all(math.sqrt((a * a).sum()) > 0.5 for a in g)          # clipnorm 0.5 clips
    assert math.sqrt(sum((a * a).sum() for a in g)) > 1.0          # global 1.0 clips
    assert (np.abs(np.concatenate(g)) > 0.05).mean() > 0.3         # clipvalue clips


def test_clipnorm_scales_each_variable_to_the_norm():
    opt = O.SGD(1.0, clipnorm=0.5)
    opt.build(N)
    w = np.zeros(N, np.float32)
    g = _grads(3)
    opt.apply(w, g, SEGS)
    for a, b in SEGS:
        assert math.isclose(np.linalg.norm(w[a:b].astype(np.float64)), 0.5, rel_tol=1e-5)
    # without segments the whole block is one variable
    opt2 = O.SGD(1.0, clipnorm=0.5)
    opt2.build(N)
    w2 = np.zeros(N, np.float32)
    opt2.apply(w2, g)
    assert math.isclose(np.linalg.norm(w2.astype(np.float64)), 0.5, rel_tol=1e-5)
    # below the norm: no change at all (scale exactly 1)
    opt3 = O.SGD(1.0, clipnorm=1e6)
    opt3.build(N)
    w3 = np.zeros(N, np.float32)
    opt3.apply(w3, g, SEGS)
    np.testing.assert_array_equal(w3, -g)


def test_global_clipnorm_and_clipvalue_exact_effect():
    g = _grads(4)
    opt = O.SGD(1.0, global_clipnorm=2.0)
    opt.build(N)
    w = np.zeros(N, np.float32)
    opt.apply(w, g, SEGS)
    assert math.isclose(np.linalg.norm(w.astype(np.float64)), 2.0, rel_tol=1e-5)
    opt = O.SGD(1.0, clipvalue=0.1)
    opt.build(N)
    w = np.zeros(N, np.float32)
    opt.apply(w, g)
    np.testing.assert_array_equal(w, -np.clip(g, -0.1, 0.1))


def test_nan_gradients_stay_nan_under_clipping():
    for clip in ({"clipvalue": 0.1}, {"clipnorm": 1.0}, {"global_clipnorm": 1.0}):
        opt = O.SGD(0.1, **clip)
        opt.build(4)
        w = np.ones(4, np.float32)
        opt.apply(w, np.array([np.nan, 1, 2, 3], np.float32))
        assert np.isnan(w[0])


def test_segments_leave_other_ranges_untouched():
    """Ranges outside ``segments`` (frozen variables): no update, no state change, no
    weight decay."""
    for cls in (O.Adam, O.RMSprop, O.Nadam, O.Adagrad, O.SGD):
        opt = cls(learning_rate=0.01, weight_decay=0.5, clipnorm=0.5) if cls is not O.SGD \
            else cls(0.01, momentum=0.9, weight_decay=0.5, clipnorm=0.5)
        opt.build(N)
        w = np.random.default_rng(2).standard_normal(N).astype(np.float32)
        w0, s0 = w.copy(), opt.state().copy()
        trainable = [SEGS[0], SEGS[3]]
        _run(opt, w, 3, segments=trainable)
        for a, b in (SEGS[1], SEGS[2]):
            np.testing.assert_array_equal(w[a:b], w0[a:b])
            np.testing.assert_array_equal(opt.state()[:, a:b], s0[:, a:b])
        a, b = SEGS[0]
        assert not np.array_equal(w[a:b], w0[a:b])


@pytest.mark.parametrize("clip", ["none", "clipnorm", "clipvalue"])
@pytest.mark.parametrize("kind", ["adam", "rmsprop_centered_momentum", "nadam", "adadelta",
                                  "sgd_nesterov"])
def test_apply_range_per_variable_equals_one_apply(kind, clip):
    _, a, _ = _make(kind, CLIPS[clip])
    _, b, _ = _make(kind, CLIPS[clip])
    wa = np.random.default_rng(3).standard_normal(N).astype(np.float32)
    wb = wa.copy()
    a.build(N)
    b.build(N)
    for s in range(3):
        g = _grads(s)
        a.apply(wa, g, SEGS)
        b.begin_step()
        for lo, hi in reversed(SEGS):          # backward order, one layer at a time
            b.apply_range(wb, g, lo, hi)
    np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a.state(), b.state())


def test_global_clipnorm_needs_the_gradients_in_begin_step():
    opt = O.Adam(global_clipnorm=1.0)
    opt.build(N)
    assert opt.needs_all_grads and not O.Adam(clipnorm=1.0).needs_all_grads
    with pytest.raises(RuntimeError, match="global_clipnorm needs the gradients"):
        opt.begin_step()
    w, g = np.zeros(N, np.float32), _grads(0)
    ref = O.Adam(global_clipnorm=1.0)
    ref.build(N)
    wr = w.copy()
    ref.apply(wr, g, SEGS)
    opt.begin_step(g, SEGS)
    for lo, hi in SEGS:
        opt.apply_range(w, g, lo, hi)
    np.testing.assert_array_equal(w, wr)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_round_trip_continues_bitwise(kind):
    _, a, _ = _make(kind, {"clipnorm": 0.7})
    a.build(N)
    w = np.random.default_rng(4).standard_normal(N).astype(np.float32)
    _run(a, w, 3)
    saved_w, saved_state, saved_it = w.copy(), a.state().copy(), a.iterations
    _run(a, w, 3, start=3)
    # a fresh optimizer from the config, with the saved state
    b = CLASSES[a.name].from_config(json.loads(json.dumps(a.get_config())))
    b.build(N)
    b.set_state(saved_state, saved_it)
    w2 = saved_w.copy()
    _run(b, w2, 3, start=3)
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(a.state(), b.state())
    assert b.iterations == a.iterations == 6


def test_adagrad_and_adadelta_state_initialisation():
    opt = O.Adagrad(initial_accumulator_value=0.25)
    opt.build(10)
    np.testing.assert_array_equal(opt.state(), np.full((1, 10), 0.25, np.float32))
    opt = O.Adadelta()
    opt.build(10)
    np.testing.assert_array_equal(opt.state(), np.zeros((2, 10), np.float32))
    assert O.RMSprop().n_slots == 1 and O.RMSprop(momentum=0.9, centered=True).n_slots == 3


@pytest.mark.parametrize("kernel", ["rmsprop", "adagrad", "adadelta", "nadam", "sgd", "adam",
                                    "sumsq"])
def test_kernels_bitwise_thread_invariant(threads, kernel):
    n = 300_001
    rng = np.random.default_rng(5)
    g = rng.standard_normal(n).astype(np.float32)
    init = [np.abs(rng.standard_normal(n)).astype(np.float32) for _ in range(3)]
    outs = []
    for t in (1, 2):
        threads(t)
        w = np.linspace(-1, 1, n, dtype=np.float32)
        s = [x.copy() for x in init]
        if kernel == "sumsq":
            outs.append((_core.sumsq(g), None))
            continue
        if kernel == "rmsprop":
            _core.rmsprop_update(w, g, s[0], s[1], s[2], 0.01, 0.9, 0.5, 1e-7, 1e-3, 0.7, 0.5)
        elif kernel == "adagrad":
            _core.adagrad_update(w, g, s[0], 0.01, 1e-7, 1e-3, 0.7, 0.5)
        elif kernel == "adadelta":
            _core.adadelta_update(w, g, s[0], s[1], 1.0, 0.95, 1e-7, 1e-3, 0.7, 0.5)
        elif kernel == "nadam":
            _core.nadam_update(w, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-7, 4.1, 0.6, 1000.0,
                               1e-3, 0.7, 0.5)
        elif kernel == "sgd":
            _core.sgd_clip_update(w, g, s[0], 0.01, 0.9, True, 1e-3, 0.7, 0.5)
        elif kernel == "adam":
            _core.adam_clip_update(w, g, s[0], s[1], 0.01, 0.9, 0.999, 1e-7, 1e-3, 0.7, 0.5)
        outs.append((w, s))
    if kernel == "sumsq":
        assert outs[0][0] == outs[1][0]
        assert math.isclose(outs[0][0], float((g.astype(np.float64) ** 2).sum()), rel_tol=1e-12)
        return
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_clip_kernels_equal_the_plain_kernels_when_not_clipping(isa):
    """The clipped SGD / Adam kernels compute the same bits as the unclipped ones."""
    n = 70_001
    rng = np.random.default_rng(6)
    g = rng.standard_normal(n).astype(np.float32)
    w1 = rng.standard_normal(n).astype(np.float32)
    w2 = w1.copy()
    m1, v1 = np.zeros(n, np.float32), np.zeros(n, np.float32)
    m2, v2 = m1.copy(), v1.copy()
    a1, a2 = O.Adam(0.003, weight_decay=0.01), O.Adam(0.003, weight_decay=0.01)
    for t in range(1, 4):
        _core.adam_update(w1, g, m1, v1, 0.003, 0.9, 0.999, 1e-7, 0.01, t)
        a2.iterations, a2._step_lr = t, 0.003
        b1, b2 = float(np.float32(0.9)), float(np.float32(0.999))
        lr_t = float(np.float32(float(np.float32(0.003)) * math.sqrt(1 - b2 ** t) /
                                (1 - b1 ** t)))
        _core.adam_clip_update(w2, g, m2, v2, lr_t, 0.9, 0.999, 1e-7, a2._wd_lr, 1.0, 0.0)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(v1, v2)
    del a1
    for mom, nest in ((0.0, False), (0.9, False), (0.9, True)):
        w1 = rng.standard_normal(n).astype(np.float32)
        w2 = w1.copy()
        v1, v2 = np.zeros(n, np.float32), np.zeros(n, np.float32)
        wd_lr = float(np.float32(0.05) * np.float32(0.01))
        for _ in range(3):
            _core.sgd_update(w1, g, v1, 0.05, mom, nest, 0.01)
            _core.sgd_clip_update(w2, g, v2, 0.05, mom, nest, wd_lr, 1.0, 0.0)
        np.testing.assert_array_equal(w1, w2)


# ------------------------------------------------------------------- schedules
def test_schedules_match_formulas():
    steps = [0, 1, 5, 99, 100, 101, 250, 1000, 5000]
    cases = [
        (S.ExponentialDecay(0.1, 100, 0.5), lambda s: RO.exponential_decay(s, 0.1, 100, 0.5)),
        (S.ExponentialDecay(0.1, 100, 0.5, staircase=True),
         lambda s: RO.exponential_decay(s, 0.1, 100, 0.5, True)),
        (S.CosineDecay(0.1, 1000), lambda s: RO.cosine_decay(s, 0.1, 1000)),
        (S.CosineDecay(0.1, 1000, alpha=0.2), lambda s: RO.cosine_decay(s, 0.1, 1000, 0.2)),
        (S.CosineDecay(0.0, 1000, warmup_target=0.1, warmup_steps=100),
         lambda s: RO.cosine_decay(s, 0.0, 1000, 0.0, 0.1, 100)),
        (S.PiecewiseConstantDecay([100, 250], [1.0, 0.5, 0.1]),
         lambda s: RO.piecewise_constant(s, [100, 250], [1.0, 0.5, 0.1])),
    ]
    for sched, ref in cases:
        for s in steps:
            assert math.isclose(sched(s), float(ref(s)), rel_tol=1e-12, abs_tol=1e-15), \
                (sched, s)
        cfg = json.loads(json.dumps(S.serialize(sched)))
        assert S.deserialize(cfg) == sched
    assert S.PiecewiseConstantDecay([100, 250], [1.0, 0.5, 0.1])(100) == 1.0
    assert S.PiecewiseConstantDecay([100, 250], [1.0, 0.5, 0.1])(101) == 0.5
    assert S.CosineDecay(0.1, 1000)(1000) == 0.0
    assert math.isclose(S.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=10)(5), 0.5)


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="decay_steps"):
        S.ExponentialDecay(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="decay_steps"):
        S.CosineDecay(0.1, -1)
    with pytest.raises(ValueError, match="length of boundaries"):
        S.PiecewiseConstantDecay([1, 2], [1.0])
    with pytest.raises(ValueError, match="increasing"):
        S.PiecewiseConstantDecay([5, 2], [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        S.deserialize({"class_name": "Nope", "config": {}})


def test_optimizer_evaluates_schedule_at_iterations_before_the_update():
    sched = S.ExponentialDecay(0.1, 2, 0.5)
    opt = O.SGD(sched, momentum=0.9)
    opt.build(N)
    w = np.zeros(N, np.float32)
    ref_w = _split(w)
    slots = RO.init_slots("sgd", ref_w, momentum=0.9)
    for t in range(1, 7):
        assert opt.learning_rate == sched(t - 1)
        g = _grads(t)
        opt.apply(w, g, SEGS)
        RO.step("sgd", ref_w, _split(g), slots, t, sched(t - 1), momentum=0.9)
    for a, b in zip(_split(w), ref_w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.01
    cfg = json.loads(json.dumps(opt.get_config()))
    assert cfg["learning_rate"]["class_name"] == "ExponentialDecay"
    opt2 = O.from_config("sgd", cfg)
    assert opt2.schedule == sched


# ------------------------------------------------------------- config, contract
def test_get_config_round_trip_and_old_configs():
    for name, cls in CLASSES.items():
        opt = cls(learning_rate=0.02, clipvalue=0.5)
        cfg = opt.get_config()
        again = O.from_config(name, json.loads(json.dumps(cfg)))
        assert type(again) is cls and again.get_config() == cfg
        assert O.get(name).name == name
        assert O.get({"class_name": name, "config": cfg}).get_config() == cfg
    # files saved before clipping / schedules existed
    old = {"sgd": {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
           "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                    "weight_decay": 0.0},
           "adamw": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                     "weight_decay": 0.004}}
    for name, cfg in old.items():
        opt = O.from_config(name, cfg)
        assert opt.clipnorm is None and opt.learning_rate == cfg["learning_rate"]
        assert {k: opt.get_config()[k] for k in cfg} == cfg


def test_bad_arguments():
    with pytest.raises(ValueError, match="only one of clipnorm"):
        O.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="only one of clipnorm"):
        O.RMSprop(clipnorm=1.0, global_clipnorm=1.0)
    for kw in ({"clipnorm": 0}, {"clipvalue": -1}, {"global_clipnorm": math.nan},
               {"learning_rate": -1}, {"weight_decay": -0.1}, {"epsilon": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            O.Nadam(**kw)
    with pytest.raises(ValueError, match="rho"):
        O.RMSprop(rho=1.0)
    with pytest.raises(ValueError, match="rho"):
        O.Adadelta(rho=-0.1)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        O.Adagrad(initial_accumulator_value=-1)
    with pytest.raises(ValueError, match="centered"):
        O.RMSprop(centered="yes")
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        O.SGD(lambda: 0.1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        O.from_config("lion", {})
    with pytest.raises(ValueError, match="bad Adam config"):
        O.from_config("adam", {"learning_rate": 0.1, "bogus": 1})
    opt = O.Adam()
    w, g = np.zeros(N, np.float32), np.zeros(N, np.float32)
    with pytest.raises(RuntimeError, match="not built"):
        opt.apply(w, g)
    opt.build(N)
    with pytest.raises(ValueError, match="built length"):
        opt.apply(w, g[:-1])
    with pytest.raises(ValueError, match="built length"):
        opt.apply(w[:5], g[:5])
    with pytest.raises(ValueError, match="segments must be sorted"):
        opt.apply(w, g, [(10, 20), (5, 30)])
    with pytest.raises(ValueError, match="segments must be sorted"):
        opt.apply(w, g, [(0, N + 1)])
    with pytest.raises(ValueError, match="pairs of ints"):
        opt.apply(w, g, [(0,)])
    with pytest.raises(ValueError, match="outside the block"):
        opt.begin_step()
        opt.apply_range(w, g, 5, N + 3)
    with pytest.raises(ValueError, match="shape"):
        opt.set_state(np.zeros((1, N)), 3)


def test_training_with_each_new_optimizer_reduces_the_loss():
    from fastdrop.layers import Dense
    from fastdrop.models import Sequential
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    for opt in (O.RMSprop(0.01, clipnorm=1.0), O.Adagrad(0.1), O.Adadelta(1.0),
                O.Nadam(0.01, global_clipnorm=1.0),
                O.Adam(S.CosineDecay(0.01, 100), clipvalue=0.5)):
        m = Sequential([Dense(16, activation="relu", input_dim=8),
                        Dense(2, activation="softmax")], seed=1)
        m.compile(opt, "sparse_categorical_crossentropy")
        h = m.fit(x, y, batch_size=32, epochs=4, verbose=0)
        assert h.history["loss"][-1] < h.history["loss"][0], opt


def test_saved_model_with_new_optimizer_and_schedule(tmp_path):
    from fastdrop.layers import Dense
    from fastdrop.models import Sequential, load_model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    m = Sequential([Dense(8, activation="relu", input_dim=8), Dense(2, activation="softmax")],
                   seed=1)
    m.compile(O.Nadam(S.ExponentialDecay(0.01, 10, 0.9), clipnorm=1.0),
              "sparse_categorical_crossentropy")
    m.fit(x, y, batch_size=16, epochs=2, verbose=0)
    m.save(tmp_path / "m.fdm")
    m2 = load_model(tmp_path / "m.fdm")
    assert type(m2.optimizer) is O.Nadam and m2.optimizer.iterations == 8
    assert m2.optimizer.schedule == m.optimizer.schedule
    m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    m2.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(m.get_weights()[0], m2.get_weights()[0])


@pytest.mark.parametrize("kind", ["rmsprop_centered_momentum", "rmsprop", "adagrad",
                                  "adadelta", "nadam", "sgd_nesterov", "sgd", "adam"])
def test_every_kernel_path_gives_the_same_bits(kind):
    """ref, avx2 and avx512 copies of the loops compute identical results (clipping on,
    so the clipped SGD / Adam kernels run too), and so do 1 and 2 threads."""
    import fastdrop
    n = 100_003
    g = np.random.default_rng(7).standard_normal(n).astype(np.float32)
    w0 = np.random.default_rng(8).standard_normal(n).astype(np.float32)
    old_isa, old_threads = _core.isa(), fastdrop.get_num_threads()
    results = []
    try:
        for isa in _core.isa_supported():
            for t in (1, 2):
                _core.set_isa(isa)
                fastdrop.set_num_threads(t)
                _, opt, _ = _make(kind, {"clipvalue": 0.5, "weight_decay": 0.01})
                opt.build(n)
                w = w0.copy()
                for _ in range(3):
                    opt.apply(w, g)
                results.append((isa, t, w, opt.state().copy(), _core.sumsq(g)))
    finally:
        _core.set_isa(old_isa)
        fastdrop.set_num_threads(old_threads)
    for isa, t, w, st, ss in results[1:]:
        np.testing.assert_array_equal(w, results[0][2], err_msg=f"{isa} {t}")
        np.testing.assert_array_equal(st, results[0][3], err_msg=f"{isa} {t}")
        assert ss == results[0][4]


def test_kernels_flush_subnormals():
    """FTZ/DAZ inside the kernels: subnormal inputs read as zero, no subnormal output."""
    tiny = np.float32(1e-40)                     # a float32 subnormal
    assert 0 < tiny < np.finfo(np.float32).tiny
    n = 64

    def sub(x):
        return (x != 0) & (np.abs(x) < np.finfo(np.float32).tiny)

    w = np.full(n, tiny, np.float32)
    g = np.full(n, tiny, np.float32)
    _core.sgd_clip_update(w, g, None, 0.5, 0.0, False, 0.0, 1.0, 0.0)
    np.testing.assert_array_equal(w, np.zeros(n, np.float32))   # not tiny - 0.5*tiny
    for kernel in ("rmsprop", "adagrad", "adadelta", "nadam", "adam"):
        w = np.full(n, tiny, np.float32)
        g = np.full(n, tiny, np.float32)
        s = [np.full(n, tiny, np.float32) for _ in range(3)]
        if kernel == "rmsprop":
            _core.rmsprop_update(w, g, s[0], s[1], s[2], 1e-3, 0.9, 0.9, 1e-7, 0.0, 1.0, 0.0)
        elif kernel == "adagrad":
            _core.adagrad_update(w, g, s[0], 1e-3, 1e-7, 0.0, 1.0, 0.0)
        elif kernel == "adadelta":
            _core.adadelta_update(w, g, s[0], s[1], 1e-3, 0.95, 1e-7, 0.0, 1.0, 0.0)
        elif kernel == "nadam":
            _core.nadam_update(w, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-7, 4.0, 0.5, 1000.0,
                               0.0, 1.0, 0.0)
        else:
            _core.adam_clip_update(w, g, s[0], s[1], 1e-3, 0.9, 0.999, 1e-7, 0.0, 1.0, 0.0)
        used = {"rmsprop": 3, "adagrad": 1}.get(kernel, 2)
        for a in [w] + s[:used]:
            assert not sub(a).any(), kernel
    assert _core.sumsq(np.full(n, tiny, np.float32)) == 0.0


@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
def test_clipnorm_with_many_segments_some_clipped(kind):
    """Many variables, about half above clipnorm (adjacent unclipped ones share a kernel
    call): each still matches the per-variable reference."""
    rng = np.random.default_rng(9)
    sizes = rng.integers(1, 40, 60)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    segs = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    n = int(bounds[-1])
    g = (rng.standard_normal(n) * rng.choice([0.01, 1.0], n)).astype(np.float32)
    norms = [np.linalg.norm(g[a:b].astype(np.float64)) for a, b in segs]
    clip = float(np.median(norms))
    opt = CLASSES[kind](learning_rate=0.01, clipnorm=clip)
    opt.build(n)
    w = np.zeros(n, np.float32)
    ref_w = [np.zeros(b - a) for a, b in segs]
    slots = RO.init_slots(kind, ref_w)
    for t in range(1, 4):
        opt.apply(w, g, segs)
        RO.step(kind, ref_w, [g[a:b] for a, b in segs], slots, t, 0.01, clipnorm=clip)
    np.testing.assert_allclose(w, np.concatenate(ref_w), rtol=1e-4, atol=1e-7)
    # a frozen variable in the middle: untouched
    opt2 = CLASSES[kind](learning_rate=0.01, clipnorm=clip)
    opt2.build(n)
    w2 = np.ones(n, np.float32)
    opt2.apply(w2, g, segs[:10] + segs[11:])
    a, b = segs[10]
    assert (w2[a:b] == 1).all() and not (w2[segs[9][0]:segs[9][1]] == 1).all()

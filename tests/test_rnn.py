"""Recurrent layers (SimpleRNN, LSTM, GRU, Bidirectional, Embedding, pooling 1D) at the
stage level against the float64 NumPy reference (fastdrop.reference.rnn)."""
import numpy as np
import pytest

import fastdrop
from fastdrop import _core
from fastdrop import initializers
from fastdrop.engine import MC, TRAIN, INFER, Arena, Context
from fastdrop.layers.recurrent import (GRU, LSTM, Bidirectional, Embedding,
                                       GlobalAveragePooling1D, GlobalMaxPooling1D,
                                       SimpleRNN, validate_token_ids)
from fastdrop.reference import rnn as R

RTOL = 1e-4


def alloc(layer, rng, scale=None):
    for v in layer.variables:
        val = v.initializer(v.shape, rng).astype(np.float32)
        if scale is not None:
            val = (rng.standard_normal(v.shape) * scale).astype(np.float32)
        v.value = val
        setattr(v.layer, v.name, v.value)
        if v.trainable:
            v.grad = np.zeros(v.shape, np.float32)
            setattr(v.layer, "d" + v.name, v.grad)


def make(layer, in_shape, m, rng, index=1, scale=0.4):
    layer.build(in_shape)
    alloc(layer, rng, scale)
    layer.noise_index = index
    st = layer.make_stage()
    st.bind(in_shape)
    Arena().allocate([st], m)
    return st


def close(a, r, tol=RTOL, what=""):
    a = np.asarray(a, np.float64)
    r = np.asarray(r, np.float64)
    assert a.shape == r.shape, (what, a.shape, r.shape)
    err = np.max(np.abs(a - r)) / max(np.max(np.abs(r)), 1e-3)
    assert err < tol, f"{what}: relative error {err:.2e}"


def masks_of(st, m):
    """The float masks the stage drew (from its bit buffers), for the reference."""
    L = st.layer
    T, F = st.in_shape
    ims = rms = None
    if L.n_in_masks:
        s = float(np.float32(1 / (1 - L.dropout)))
        ims = [np.unpackbits(st.buf["in_mask"][k], bitorder="little")[:m * F]
               .reshape(m, F) * s for k in range(L.n_in_masks)]
    if L.n_rec_masks:
        s = float(np.float32(1 / (1 - L.recurrent_dropout)))
        rms = [np.unpackbits(st.buf["rec_mask"][k], bitorder="little")[:m * L.units]
               .reshape(m, L.units) * s for k in range(L.n_rec_masks)]
    return ims, rms


def ref_layer(L, x, masks=(None, None), seq=None):
    b = L.bias if L.use_bias else None
    return R.rnn_forward(L.cell, x, L.kernel, L.recurrent_kernel, b,
                         activation=L.activation,
                         recurrent_activation=L.recurrent_activation,
                         reset_after=getattr(L, "reset_after", True),
                         go_backwards=L.go_backwards, return_sequences=L.return_sequences,
                         in_masks=masks[0], rec_masks=masks[1], seq=seq)


def check_grads(L, ref):
    dx, dW, dU, db = ref
    close(L.dkernel, dW, what="dkernel")
    close(L.drecurrent_kernel, dU, what="drecurrent_kernel")
    if L.use_bias:
        close(L.dbias, db, what="dbias")


CELLS = [("simple", {}), ("lstm", {}), ("gru", {"reset_after": True}),
         ("gru", {"reset_after": False})]


def new(cell, units, **kw):
    return {"simple": SimpleRNN, "lstm": LSTM, "gru": GRU}[cell](units, **kw)


# --------------------------------------------------------------- cells vs reference
@pytest.mark.parametrize("cell,extra", CELLS)
@pytest.mark.parametrize("rs", [False, True])
@pytest.mark.parametrize("gb", [False, True])
def test_cell_forward_backward_vs_reference(cell, extra, rs, gb, isa):
    rng = np.random.default_rng(1)
    m, T, F, u = 6, 5, 4, 7
    L = new(cell, u, return_sequences=rs, go_backwards=gb, **extra)
    st = make(L, (T, F), m, rng)
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    ctx = Context(TRAIN, m, step=3)
    y = st.forward(ctx, x)
    yr, cache = ref_layer(L, x)
    close(y, yr, what="forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = st.backward(ctx, dy, True)
    ref = R.rnn_backward(cache, dy)
    close(dx, ref[0], what="dx")
    check_grads(L, ref)


@pytest.mark.parametrize("cell,extra", CELLS)
@pytest.mark.parametrize("rates", [(0.3, 0.0), (0.3, 0.4), (0.0, 0.4)])
def test_dropout_masks_vs_reference(cell, extra, rates):
    rng = np.random.default_rng(2)
    m, T, F, u = 9, 4, 5, 6
    L = new(cell, u, dropout=rates[0], recurrent_dropout=rates[1], return_sequences=True,
            **extra)
    st = make(L, (T, F), m, rng)
    # Keras 3 mask counts: per gate for inputs and h when recurrent_dropout > 0
    G = L.gates
    assert L.n_rec_masks == (G if rates[1] else 0)
    assert L.n_in_masks == (0 if not rates[0] else (G if rates[1] else 1))
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    ctx = Context(TRAIN, m, step=7, seed=5)
    y = st.forward(ctx, x).copy()
    masks = masks_of(st, m)
    if masks[1] is not None and G > 1:   # independent masks per gate
        assert any((masks[1][0] != masks[1][k]).any() for k in range(1, G))
    yr, cache = ref_layer(L, x, masks)
    close(y, yr, what="forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = st.backward(ctx, dy, True)
    ref = R.rnn_backward(cache, dy)
    close(dx, ref[0], what="dx")
    check_grads(L, ref)
    # inference: no noise
    y0 = st.forward(Context(INFER, m), x)
    close(y0, ref_layer(L, x)[0], what="infer")


def test_variable_length_rebind():
    rng = np.random.default_rng(3)
    L = LSTM(5, return_sequences=True)
    L.build((None, 3))
    assert L.compute_output_shape((None, 3)) == (None, 5)
    assert LSTM(5).compute_output_shape((None, 3)) == (5,)
    alloc(L, rng, 0.4)
    st = L.make_stage()
    for T in (5, 9):
        st.bind((T, 3))
        Arena().allocate([st], 4)
        x = rng.standard_normal((4, T, 3)).astype(np.float32)
        ctx = Context(TRAIN, 4)
        y = st.forward(ctx, x)
        yr, cache = ref_layer(L, x)
        close(y, yr, what=f"T={T}")
        dy = rng.standard_normal(y.shape).astype(np.float32)
        ref = R.rnn_backward(cache, dy)
        close(st.backward(ctx, dy, True), ref[0])
        check_grads(L, ref)


def test_stacked_lstm_gru():
    rng = np.random.default_rng(4)
    m, T, F = 5, 6, 3
    L1 = LSTM(8, return_sequences=True, dropout=0.2, recurrent_dropout=0.3)
    L2 = GRU(4, reset_after=False)
    s1 = make(L1, (T, F), m, rng, index=1)
    s2 = make(L2, (T, 8), m, rng, index=2)
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    ctx = Context(TRAIN, m, step=1)
    h = s1.forward(ctx, x)
    y = s2.forward(ctx, h)
    y1r, c1 = ref_layer(L1, x, masks_of(s1, m))
    y2r, c2 = ref_layer(L2, y1r)
    close(y, y2r, what="stack forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dh = s2.backward(ctx, dy, True)
    dx = s1.backward(ctx, dh, True)
    r2 = R.rnn_backward(c2, dy)
    r1 = R.rnn_backward(c1, r2[0])
    check_grads(L2, r2)
    check_grads(L1, r1)
    close(dx, r1[0], what="dx")


@pytest.mark.parametrize("mode", ["concat", "sum", "ave", "mul"])
@pytest.mark.parametrize("rs", [False, True])
def test_bidirectional(mode, rs):
    rng = np.random.default_rng(5)
    m, T, F, u = 4, 5, 3, 6
    B = Bidirectional(GRU(u, return_sequences=rs), merge_mode=mode)
    st = make(B, (T, F), m, rng)
    names = [v.name for v in B.variables]
    assert names == ["kernel", "recurrent_kernel", "bias"] * 2
    assert B.variables[0].layer is B.forward_layer and B.backward_layer.go_backwards
    assert B.compute_output_shape((T, F))[-1] == (2 * u if mode == "concat" else u)
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    ctx = Context(TRAIN, m)
    y = st.forward(ctx, x)
    yf, cf = ref_layer(B.forward_layer, x)
    yb, cb = ref_layer(B.backward_layer, x)
    if rs:
        yb = yb[:, ::-1]
    merged = {"concat": lambda: np.concatenate([yf, yb], -1), "sum": lambda: yf + yb,
              "ave": lambda: (yf + yb) / 2, "mul": lambda: yf * yb}[mode]()
    close(y, merged, what="forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = st.backward(ctx, dy, True)
    if mode == "concat":
        dyf, dyb = dy[..., :u], dy[..., u:]
    elif mode == "sum":
        dyf = dyb = dy
    elif mode == "ave":
        dyf = dyb = dy / 2
    else:
        dyf, dyb = dy * yb, dy * yf
    if rs:
        dyb = dyb[:, ::-1]
    rf = R.rnn_backward(cf, dyf)
    rb = R.rnn_backward(cb, dyb)
    check_grads(B.forward_layer, rf)
    check_grads(B.backward_layer, rb)
    close(dx, rf[0] + rb[0], what="dx")
    assert Bidirectional.from_config(B.get_config()).merge_mode == mode


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("cell,extra", CELLS)
def test_embedding_mask(mask_zero, cell, extra):
    rng = np.random.default_rng(6)
    m, T, V, D, u = 6, 7, 11, 4, 5
    E = Embedding(V, D, mask_zero=mask_zero)
    L = new(cell, u, return_sequences=True, go_backwards=True, recurrent_dropout=0.3,
            **extra)
    se = make(E, (T,), m, rng, index=1)
    sl = make(L, (T, D), m, rng, index=2)
    ids = rng.integers(1, V, (m, T))
    ids[0, :3] = 0      # left padding
    ids[1, 4:] = 0      # right padding
    ids[2, :] = 0       # all padding
    ids[3, 2] = 0       # a hole
    x = ids.astype(np.float32)
    ctx = Context(TRAIN, m, step=2)
    e = se.forward(ctx, x)
    close(e, R.embedding_forward(ids, E.embeddings), what="embedding")
    ctx.seq_mask = se.mask_out(ctx, None)
    assert (ctx.seq_mask is None) == (not mask_zero)
    y = sl.forward(ctx, e)
    seq = (ids != 0) if mask_zero else None
    yr, cache = ref_layer(L, e, masks_of(sl, m), seq=seq)
    close(y, yr, what="forward")
    assert sl.mask_out(ctx, ctx.seq_mask) is ctx.seq_mask
    dy = rng.standard_normal(y.shape).astype(np.float32)
    de = sl.backward(ctx, dy, True)
    ref = R.rnn_backward(cache, dy)
    close(de, ref[0], what="dx")
    check_grads(L, ref)
    se.backward(ctx, de, False)
    close(E.dembeddings, R.embedding_backward(ids, de, V), what="dembeddings")
    if mask_zero:   # a fully padded sequence keeps the zero state
        assert not y[2].any()


def test_pooling_1d():
    rng = np.random.default_rng(7)
    m, T, F = 5, 6, 3
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    mask = rng.random((m, T)) > 0.3
    mask[:, 0] = True
    for Layer_, masked in ((GlobalAveragePooling1D, False), (GlobalAveragePooling1D, True),
                           (GlobalMaxPooling1D, False)):
        st = make(Layer_(), (T, F), m, rng)
        ctx = Context(TRAIN, m)
        ctx.seq_mask = mask if masked else None
        y = st.forward(ctx, x)
        if Layer_ is GlobalMaxPooling1D:
            close(y, R.global_max_pooling1d(x))
        else:
            close(y, R.global_average_pooling1d(x, mask if masked else None))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = st.backward(ctx, dy, True)
        # d/dx of sum(y*dy) by finite differences on the reference (exact for these)
        xd = x.astype(np.float64)
        eps = 1e-6
        for (i, t, f) in [(0, 1, 2), (3, 4, 0), (4, 0, 1)]:
            xp = xd.copy(); xp[i, t, f] += eps
            xm = xd.copy(); xm[i, t, f] -= eps
            fn = (R.global_max_pooling1d if Layer_ is GlobalMaxPooling1D else
                  (lambda v: R.global_average_pooling1d(v, mask if masked else None)))
            g = ((fn(xp) - fn(xm)) * dy).sum() / (2 * eps)
            assert abs(g - dx[i, t, f]) < 1e-4
        assert st.mask_out(ctx, mask) is None


# ----------------------------------------------------------- finite differences
def _ref_stack_loss(params, x, masks, seq, dyw):
    (W1, U1, b1, W2, U2, b2) = params
    y1, _ = R.rnn_forward("lstm", x, W1, U1, b1, return_sequences=True,
                          in_masks=masks[0], rec_masks=masks[1], seq=seq)
    y2, _ = R.rnn_forward("gru", y1, W2, U2, b2, reset_after=True, go_backwards=True,
                          return_sequences=True, seq=seq, rec_masks=masks[2])
    return float((y2 * dyw).sum())


def test_finite_differences_reference_stack():
    """The reference's BPTT (the oracle) against central differences, on an LSTM -> GRU
    stack with dropout masks and a sequence mask held fixed."""
    rng = np.random.default_rng(8)
    m, T, F, u1, u2 = 3, 5, 2, 3, 2
    x = rng.standard_normal((m, T, F))
    params = [rng.standard_normal((F, 4 * u1)) * .5, rng.standard_normal((u1, 4 * u1)) * .5,
              rng.standard_normal(4 * u1) * .3, rng.standard_normal((u1, 3 * u2)) * .5,
              rng.standard_normal((u2, 3 * u2)) * .5, rng.standard_normal((2, 3 * u2)) * .3]
    ims = [(rng.random((m, F)) > .3) / .7 for _ in range(4)]
    rms = [(rng.random((m, u1)) > .3) / .7 for _ in range(4)]
    rms2 = [(rng.random((m, u2)) > .3) / .7 for _ in range(3)]
    seq = rng.random((m, T)) > 0.25
    masks = (ims, rms, rms2)
    dyw = rng.standard_normal((m, T, u2))
    W1, U1, b1, W2, U2, b2 = params
    y1, c1 = R.rnn_forward("lstm", x, W1, U1, b1, return_sequences=True, in_masks=ims,
                           rec_masks=rms, seq=seq)
    y2, c2 = R.rnn_forward("gru", y1, W2, U2, b2, go_backwards=True, seq=seq,
                           return_sequences=True, rec_masks=rms2)
    g2 = R.rnn_backward(c2, dyw)
    g1 = R.rnn_backward(c1, g2[0])
    analytic = [g1[1], g1[2], g1[3], g2[1], g2[2], g2[3]]
    eps = 1e-6
    for k, p in enumerate(params):
        for idx in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(4)]:
            old = p[idx]
            p[idx] = old + eps
            lp = _ref_stack_loss(params, x, masks, seq, dyw)
            p[idx] = old - eps
            lm = _ref_stack_loss(params, x, masks, seq, dyw)
            p[idx] = old
            num = (lp - lm) / (2 * eps)
            assert abs(num - analytic[k][idx]) < 1e-6 + 1e-5 * abs(num), (k, idx)
    for idx in [(0, 1, 0), (2, 4, 1), (1, 0, 1)]:
        old = x[idx]
        x[idx] = old + eps
        lp = _ref_stack_loss(params, x, masks, seq, dyw)
        x[idx] = old - eps
        lm = _ref_stack_loss(params, x, masks, seq, dyw)
        x[idx] = old
        assert abs((lp - lm) / (2 * eps) - g1[0][idx]) < 1e-6


@pytest.mark.parametrize("cell,extra", CELLS)
def test_finite_differences_stage(cell, extra):
    """The C stage's gradients against central differences of its own float32 forward
    (loose tolerance: float32), with the dropout masks held fixed (same step key)."""
    rng = np.random.default_rng(9)
    m, T, F, u = 3, 4, 3, 4
    L = new(cell, u, return_sequences=True, dropout=0.2, recurrent_dropout=0.3, **extra)
    st = make(L, (T, F), m, rng, scale=0.5)
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    dyw = rng.standard_normal((m, T, u)).astype(np.float32)

    def loss():
        return float((st.forward(Context(TRAIN, m, step=4), x).astype(np.float64) * dyw).sum())

    ctx = Context(TRAIN, m, step=4)
    st.forward(ctx, x)
    st.backward(ctx, dyw, True)
    for name in ("kernel", "recurrent_kernel", "bias"):
        w = getattr(L, name)
        g = getattr(L, "d" + name).copy()
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in w.shape)
            old = w[idx]
            w[idx] = old + 1e-2
            lp = loss()
            w[idx] = old - 1e-2
            lm = loss()
            w[idx] = old
            num = (lp - lm) / 2e-2
            assert abs(num - g[idx]) < 2e-3 + 2e-2 * abs(num), (name, idx, num, g[idx])


# --------------------------------------------------------------- mask semantics
def test_one_mask_per_sequence():
    """A 1-unit linear SimpleRNN with recurrent dropout 0.5 (W = U = 1, x = 1): a kept
    h gives 1, 3, 7, 15, ...; a dropped one 1, 1, 1, ...  Never a mix."""
    m, T = 256, 6
    L = SimpleRNN(1, activation="linear", use_bias=False, recurrent_dropout=0.5,
                  return_sequences=True)
    st = make(L, (T, 1), m, np.random.default_rng(0))
    L.kernel[...] = 1.0
    L.recurrent_kernel[...] = 1.0
    x = np.ones((m, T, 1), np.float32)
    y = st.forward(Context(TRAIN, m, step=11), x)[:, :, 0]
    kept = np.array([2.0 ** (t + 1) - 1 for t in range(T)])
    dropped = np.ones(T)
    is_kept = (y == kept).all(1)
    is_dropped = (y == dropped).all(1)
    assert (is_kept | is_dropped).all()
    assert 80 < is_kept.sum() < 176
    # another step: another mask; MC: per pass
    y2 = st.forward(Context(TRAIN, m, step=12), x)[:, :, 0]
    assert ((y2 == kept).all(1) != is_kept).any()


def test_mc_masks_do_not_depend_on_batch():
    rng = np.random.default_rng(10)
    T, F, n, passes = 4, 3, 8, 3
    L = LSTM(5, dropout=0.3, recurrent_dropout=0.3)
    st = make(L, (T, F), n * passes, rng)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    xx = np.tile(x, (passes, 1, 1))
    full = st.forward(Context(MC, n * passes, seed=9, passes=passes), xx).copy()
    assert not np.array_equal(full[:n], full[n:2 * n])      # passes differ
    half = n // 2
    xs = np.tile(x[half:], (passes, 1, 1))
    part = st.forward(Context(MC, half * passes, seed=9, passes=passes, offset=half), xs)
    full = full.reshape(passes, n, -1)[:, half:]
    close(part.reshape(passes, half, -1), full, tol=1e-6, what="MC chunking")


def test_threads_bitwise(threads):
    rng = np.random.default_rng(11)
    m, T, F = 130, 7, 9     # 3 row chunks
    results = []
    for nt in (1, 2):
        threads(nt)
        for cell, extra in CELLS:
            L = new(cell, 12, return_sequences=True, dropout=0.25, recurrent_dropout=0.25,
                    **extra)
            st = make(L, (T, F), m, np.random.default_rng(1))
            x = np.random.default_rng(2).standard_normal((m, T, F)).astype(np.float32)
            ctx = Context(TRAIN, m, step=1)
            y = st.forward(ctx, x).copy()
            dy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
            dx = st.backward(ctx, dy, True).copy()
            results.append((y, dx, L.dkernel.copy(), L.drecurrent_kernel.copy(),
                            L.dbias.copy()))
    k = len(CELLS)
    for a, b in zip(results[:k], results[k:]):
        for p, q in zip(a, b):
            assert np.array_equal(p, q)
    del rng


# ------------------------------------------------------------------ bad input
def test_bad_arguments():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="units"):
            LSTM(bad)
    for arg in ("dropout", "recurrent_dropout"):
        for bad in (-0.1, 1.0, 1.5):
            with pytest.raises(ValueError, match=arg):
                GRU(4, **{arg: bad})
    with pytest.raises(ValueError, match="activation"):
        SimpleRNN(3, activation="softmax")
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(LSTM(3), merge_mode="max")
    with pytest.raises(ValueError, match="input_dim"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="output_dim"):
        Embedding(5, -1)


def test_bad_shapes_and_ids():
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="3-D"):
        LSTM(3).build((5,))
    with pytest.raises(ValueError, match="3-D"):
        GRU(3).build((2, 3, 4))
    L = LSTM(3)
    st = make(L, (4, 2), 3, rng)
    with pytest.raises(ValueError, match="features"):
        L.compute_output_shape((4, 5))
    with pytest.raises(ValueError, match="inputs"):
        st.forward(Context(TRAIN, 3), np.zeros((3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="inputs"):
        st.forward(Context(TRAIN, 3), np.zeros((3, 8), np.float32))
    E = Embedding(10, 2)
    se = make(E, (4,), 2, rng)
    for ids, what in ((10, "input_dim"), (-1, "negative"), (2.5, "integer")):
        x = np.zeros((2, 4), np.float32)
        x[1, 2] = ids
        with pytest.raises(ValueError, match=what):
            se.forward(Context(TRAIN, 2), x)
    with pytest.raises(ValueError, match="integer"):
        validate_token_ids(np.array([np.nan]), 10)


def test_config_round_trip_and_initializers():
    rng = np.random.default_rng(13)
    for layer in (SimpleRNN(3, activation="relu", go_backwards=True, seed=4),
                  LSTM(4, dropout=0.1, recurrent_dropout=0.2, unit_forget_bias=False),
                  GRU(5, reset_after=False, return_sequences=True),
                  Embedding(7, 3, mask_zero=True), GlobalAveragePooling1D(),
                  GlobalMaxPooling1D(keepdims=True)):
        cfg = layer.get_config()
        again = type(layer).from_config(cfg)
        assert again.get_config() == cfg
    L = LSTM(4)
    L.build((3, 2))
    alloc(L, rng)
    assert [v.shape for v in L.variables] == [(2, 16), (4, 16), (16,)]
    np.testing.assert_array_equal(L.bias, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    q = initializers.get("orthogonal")((4, 16), rng)
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-5)
    q = initializers.get("orthogonal")((6, 3), rng)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-5)
    e = initializers.get("uniform")((100, 5), rng)
    assert e.min() >= -0.05 and e.max() <= 0.05
    G = GRU(3)
    G.build((2, 2))
    assert [v.shape for v in G.variables] == [(2, 9), (3, 9), (2, 9)]


def test_gate_activation_accuracy(isa):
    x = np.concatenate([np.linspace(-90, 90, 20001), np.logspace(-7, 1.5, 500),
                        -np.logspace(-7, 1.5, 500)]).astype(np.float32)
    y = np.empty_like(x)
    for name, ref in (("tanh", np.tanh), ("sigmoid", lambda v: 1 / (1 + np.exp(-v)))):
        _core.rnn_act(_core.RNN_ACTS[name], x, y)
        r = ref(x.astype(np.float64))
        assert np.max(np.abs(y - r) / np.maximum(np.abs(r), 1e-30)) < 1e-6


# ------------------------------------------------------------- Keras (optional)
@pytest.mark.skipif(not __import__("os").environ.get("FASTDROP_TEST_KERAS"),
                    reason="set FASTDROP_TEST_KERAS=1 (needs keras + torch; slow import)")
def test_keras_forward_equality():
    """Keras 3 (torch backend) layers with random weights, loaded into fastdrop's with
    set_weights order: forward outputs agree to float32 rounding."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    m, T, F, u = 4, 6, 5, 7
    x = rng.standard_normal((m, T, F)).astype(np.float32)

    def fd_run(layer, xin, in_shape, ws, seq=None):
        layer.build(in_shape)
        for v, w in zip(layer.variables, ws):
            v.value = np.ascontiguousarray(w, np.float32)
            setattr(v.layer, v.name, v.value)
        st = layer.make_stage()
        st.bind(in_shape)
        Arena().allocate([st], xin.shape[0])
        ctx = Context(INFER, xin.shape[0])
        ctx.seq_mask = seq
        return st.forward(ctx, xin).copy()

    def keras_out(k, xin):
        k(xin)
        ws = [w + rng.standard_normal(w.shape).astype(np.float32) * 0.3
              for w in k.get_weights()]
        k.set_weights(ws)
        return np.asarray(k(xin).detach().cpu().numpy()), ws

    for kcls, fcls, kw in ((keras.layers.SimpleRNN, SimpleRNN, {}),
                           (keras.layers.LSTM, LSTM, {}), (keras.layers.GRU, GRU, {}),
                           (keras.layers.GRU, GRU, {"reset_after": False})):
        for rs in (False, True):
            for gb in (False, True):
                yk, ws = keras_out(kcls(u, return_sequences=rs, go_backwards=gb, **kw), x)
                yf = fd_run(fcls(u, return_sequences=rs, go_backwards=gb, **kw), x, (T, F), ws)
                np.testing.assert_allclose(yf, yk, atol=2e-6)
    for mode in ("concat", "sum", "ave", "mul"):
        yk, ws = keras_out(keras.layers.Bidirectional(
            keras.layers.LSTM(u, return_sequences=True), merge_mode=mode), x)
        yf = fd_run(Bidirectional(LSTM(u, return_sequences=True), merge_mode=mode), x,
                    (T, F), ws)
        np.testing.assert_allclose(yf, yk, atol=2e-6)
    V = 9
    ids = rng.integers(1, V, (m, T))
    ids[0, :2] = 0
    ids[1, 4:] = 0
    ids[2, 3] = 0
    yk, ws = keras_out(keras.Sequential([keras.layers.Embedding(V, F, mask_zero=True),
                                         keras.layers.GRU(u, return_sequences=True)]), ids)
    e = fd_run(Embedding(V, F, mask_zero=True), ids.astype(np.float32), (T,), ws[:1])
    yf = fd_run(GRU(u, return_sequences=True), e, (T, F), ws[1:], seq=ids != 0)
    np.testing.assert_allclose(yf, yk, atol=2e-6)


@pytest.mark.filterwarnings("ignore:set_num_threads")
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_rb", "simple"])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_training_bitwise_equal_for_any_thread_count(isa, threads, cell, rate):
    """Forward and backward through time (per-chunk loop, weight-gradient GEMMs over all
    steps) give the same bits for 1, 2 and 3 threads; m = 150 makes 3 row chunks."""
    from fastdrop.layers import Dense, Input
    from fastdrop.models import Sequential
    kw = dict(dropout=rate, recurrent_dropout=rate)
    layer = {"lstm": lambda: LSTM(24, **kw), "gru": lambda: GRU(24, **kw),
             "gru_rb": lambda: GRU(24, reset_after=False, **kw),
             "simple": lambda: SimpleRNN(24, **kw)}[cell]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((150, 7, 5)).astype(np.float32)
    y = rng.integers(0, 3, 150)
    got = []
    for nt in (1, 2, 3):
        threads(nt)
        model = Sequential([Input((7, 5)), layer(), Dense(3, activation="softmax")], seed=4)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=150, epochs=2, shuffle=False, verbose=0)
        got.append(np.concatenate([w.ravel() for w in model.get_weights()]))
    assert np.array_equal(got[0], got[1]) and np.array_equal(got[0], got[2])



@pytest.mark.filterwarnings("ignore:set_num_threads")
@pytest.mark.parametrize("cell", ["lstm", "simple"])
@pytest.mark.parametrize("m,T", [(1, 1), (13, 1), (13, 3), (67, 4), (130, 3)])
@pytest.mark.parametrize("rates,seqmask", [((0.0, 0.0), False), ((0.0, 0.0), True),
                                           ((0.3, 0.0), False), ((0.0, 0.4), True),
                                           ((0.3, 0.4), False)])
def test_weight_gradients_in_the_time_loop(isa, threads, cell, m, T, rates, seqmask):
    """LSTM / SimpleRNN sum [dW; db; dU] inside the backward time loop (one per-chunk
    accumulator, chunks added in order): against the reference for odd batch sizes (1, 13;
    67 and 130 make two and three uneven row chunks), one step, sequence masks and
    dropout / recurrent dropout (one set of step rows, or one per gate), and the same bits
    for 1 and 2 threads."""
    rng = np.random.default_rng(20)
    F, u = 5, 9
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    seq = (rng.random((m, T)) > 0.3) if seqmask else None
    got = []
    for nt in (1, 2):
        threads(nt)
        L = new(cell, u, dropout=rates[0], recurrent_dropout=rates[1],
                return_sequences=True)
        st = make(L, (T, F), m, np.random.default_rng(21))
        ctx = Context(TRAIN, m, step=5, seed=3)
        if seq is not None:
            ctx.seq_mask = seq
        y = st.forward(ctx, x).copy()
        dy = np.random.default_rng(22).standard_normal(y.shape).astype(np.float32)
        dx = st.backward(ctx, dy, True).copy()
        got.append([y, dx, L.dkernel.copy(), L.drecurrent_kernel.copy(), L.dbias.copy()])
    for a, b in zip(got[0], got[1]):
        assert np.array_equal(a, b), "1 and 2 threads differ"
    yr, cache = ref_layer(L, x, masks_of(st, m), seq=seq)
    close(got[0][0], yr, what="forward")
    ref = R.rnn_backward(cache, dy)
    close(got[0][1], ref[0], what="dx")
    check_grads(L, ref)
    if T == 1:
        assert not L.drecurrent_kernel.any()    # h_{-1} = 0: no recurrent gradient

def test_mc_predict_keeps_the_sequence_mask_of_the_prefix():
    """predict(x, mc_samples=T) runs the deterministic prefix once and the noisy rest on
    tiled rows: the prefix's sequence mask (Embedding(mask_zero=True)) must reach the
    tiled passes.  With a vanishing dropout rate MC equals predict, padding included."""
    from fastdrop.layers import Dense, Dropout, Input
    from fastdrop.models import Sequential
    x = np.array([[0, 0, 0, 2, 8], [4, 6, 0, 0, 0], [1, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    for noisy in (lambda: [GRU(6, dropout=1e-7)], lambda: [Dropout(1e-7), LSTM(6)]):
        m = Sequential([Input((5,)), Embedding(10, 4, mask_zero=True)] + noisy() +
                       [Dense(3)], seed=0)
        mean, std = m.predict(x, mc_samples=3, batch_size=3)
        np.testing.assert_allclose(mean, m.predict(x), rtol=1e-5, atol=1e-7)

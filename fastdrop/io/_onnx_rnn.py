"""Recurrent layers in the ONNX export (``fastdrop.io.onnx``): SimpleRNN, LSTM, GRU and
Bidirectional.

Two translations, chosen per layer:

* ONNX's own ``RNN`` / ``LSTM`` / ``GRU`` op when it expresses the layer: no sequence
  mask, activations among tanh / sigmoid / relu (parameter-free, so no runtime has to
  guess how ``activation_alpha`` lists are consumed), and no recurrent-dropout noise.
  Keras's LSTM gates i, f, c, o become ONNX's i, o, f, c; GRU's z, r, h stay, with
  ``linear_before_reset=1`` for ``reset_after=True`` (the input bias in ``Wb``, the
  recurrent bias in ``Rb``).  Input dropout with one mask shared by all gates (fastdrop's
  and Keras's case when ``recurrent_dropout == 0``) is one (batch, 1, features) mask
  multiplied into the whole sequence before the op.
* A ``Scan`` over time otherwise: a sequence mask (``Embedding(mask_zero=True)``: Keras and
  fastdrop carry the state through masked steps and repeat the previous output, wherever
  the padding sits — ONNX's ``sequence_lens`` expresses only post-padding), hard_sigmoid or
  linear activations, and ``recurrent_dropout`` under ``mc_dropout=True``.  The input
  projection of all steps (one MatMul, per-gate input masks included) is computed before
  the loop; the body does the recurrent product and the gates.  Variational masks — the
  per-gate input masks and per-gate masks on h_{t-1} (fastdrop's and Keras 3's
  ``implementation=1`` semantics) — are drawn once per sequence before the loop and read
  by the body from the outer scope, so every step of a run uses the same masks.
"""
import numpy as np
from onnx import helper

from ._onnx_graph import BOOL, F32, value_info

_NATIVE_ACTS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}
_GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
_ONNX_OP = {"simple_rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_LSTM_TO_ONNX = (0, 3, 1, 2)   # Keras i, f, c, o -> ONNX i, o, f, c


def _f32(a):
    return np.ascontiguousarray(np.asarray(a, np.float32))


def _gate_cols(w, u, order):
    return np.concatenate([w[..., g * u:(g + 1) * u] for g in order], axis=-1)


def _biases(L):
    """(input-side bias (G*u,), recurrent-side bias (G*u,) or None)."""
    Gu = _GATES[L.kind] * L.units
    if not L.use_bias:
        return np.zeros(Gu, np.float32), None
    b = _f32(L.bias)
    if L.kind == "gru" and L.reset_after:
        return b[0], b[1]
    return b.reshape(-1), None


def native_ok(L, seq, mc):
    """Whether ONNX's own recurrent op expresses layer L in this export."""
    if seq is not None:
        return False
    acts = [L.activation] if L.kind == "simple_rnn" else [L.activation, L.recurrent_activation]
    if any(a not in _NATIVE_ACTS for a in acts):
        return False
    return not (mc and L.recurrent_dropout > 0)


def _native_weights(L):
    """(W (G*u, F), R (G*u, u), B (2*G*u,)) of one direction in ONNX gate order."""
    u = L.units
    order = _LSTM_TO_ONNX if L.kind == "lstm" else tuple(range(_GATES[L.kind]))
    W = _gate_cols(_f32(L.kernel), u, order).T
    R = _gate_cols(_f32(L.recurrent_kernel), u, order).T
    b_in, b_rec = _biases(L)
    b_in = _gate_cols(b_in, u, order)
    b_rec = np.zeros_like(b_in) if b_rec is None else _gate_cols(b_rec, u, order)
    return W, R, np.concatenate([b_in, b_rec])


def _native_acts(L):
    if L.kind == "simple_rnn":
        return [_NATIVE_ACTS[L.activation]]
    if L.kind == "lstm":
        return [_NATIVE_ACTS[L.recurrent_activation], _NATIVE_ACTS[L.activation],
                _NATIVE_ACTS[L.activation]]
    return [_NATIVE_ACTS[L.recurrent_activation], _NATIVE_ACTS[L.activation]]


def _native(g, layers, x_tm, direction):
    """One ONNX recurrent op over time-major x_tm (T, m, F) for ``layers`` (one, or the
    forward and backward layers of a Bidirectional).  Returns (Y (T, dirs, m, u),
    Y_h (dirs, m, u))."""
    L = layers[0]
    ws = [_native_weights(l) for l in layers]
    W = g.const(np.stack([w[0] for w in ws]), "W")
    R = g.const(np.stack([w[1] for w in ws]), "R")
    B = g.const(np.stack([w[2] for w in ws]), "B")
    acts = sum((_native_acts(l) for l in layers), [])
    attrs = dict(hidden_size=L.units, activations=acts, direction=direction)
    if L.kind == "gru":
        attrs["linear_before_reset"] = int(L.reset_after)
    y, yh = g.fresh("Y"), g.fresh("Y_h")
    outs = [y, yh] + ([""] if L.kind == "lstm" else [])
    g.op(_ONNX_OP[L.kind], [x_tm, W, R, B], outs, **attrs)
    return y, yh


def _input_dropped(g, L, x, mc):
    """x (m, T, F) with the layer's single shared input mask applied (MC only)."""
    if mc and L.dropout > 0:
        return g.dropout(x, L.dropout, (None, 1, None), (None, None, None))
    return x


def _native_single(g, L, x, mc, order):
    x = _input_dropped(g, L, x, mc)
    x_tm = g.transpose(x, (1, 0, 2))
    y, yh = _native(g, [L], x_tm, "reverse" if L.go_backwards else "forward")
    if not L.return_sequences:
        return g.squeeze(yh, [0])
    y = g.transpose(g.squeeze(y, [1]), (1, 0, 2))       # (m, T, u), input order
    if L.go_backwards != (order == "flipped"):
        y = g.reverse_axis(y, 1)
    return y


def _scan(g, L, x, seq, mc, order):
    """Layer L as a Scan over time.  x (m, T, F); seq (m, T) bool or None."""
    kind, u = L.kind, L.units
    G = _GATES[kind]
    K = _f32(L.kernel)
    U = _f32(L.recurrent_kernel)
    b_in, b_rec = _biases(L)
    n_in = L.n_in_masks if mc else 0
    n_rec = L.n_rec_masks if mc else 0
    # ---- input projection of every step, before the loop
    if n_in > 1:
        src = g.slice(x, [0], [1], [1])                   # (m, 1, F): one mask per sequence
        masks = g.keep_mask(src, L.dropout, n_in)
        parts = [g.op("MatMul", [g.op("Mul", [x, masks[k]]),
                                 g.const(K[:, k * u:(k + 1) * u], "Wg")]) for k in range(G)]
        proj = g.op("Concat", parts, axis=-1)
    else:
        xin = _input_dropped(g, L, x, mc)
        proj = g.op("MatMul", [xin, g.const(K, "W")])
    if L.use_bias:
        proj = g.op("Add", [proj, g.const(b_in, "b")])
    scan_in = [g.transpose(proj, (1, 0, 2))]              # (T, m, G*u)
    if seq is not None:
        scan_in.append(g.unsqueeze(g.transpose(seq, (1, 0)), [2]))   # (T, m, 1) bool
    h0 = g.zeros_like_rows(x, u)
    n_states = 2 if kind == "lstm" else 1
    rms = []
    if n_rec:
        rms = g.keep_mask(h0, L.recurrent_dropout, n_rec)
        rms = rms if isinstance(rms, list) else [rms]
    # ---- the body: one step
    b = g.sub()
    h = b.fresh("h_prev")
    c = b.fresh("c_prev") if kind == "lstm" else None
    p = b.fresh("proj_t")
    mt = b.fresh("mask_t") if seq is not None else None

    def gate(t, k, width=u):
        return b.slice(t, [k * u], [k * u + width], [1])

    def rec_product(gates):
        """sum over the listed gates of (h * rec_mask_g) @ U_g, concatenated."""
        if not rms:
            cols = np.concatenate([U[:, k * u:(k + 1) * u] for k in gates], axis=1)
            return b.op("MatMul", [h, b.const(cols, "U")])
        parts = [b.op("MatMul", [b.op("Mul", [h, rms[k]]),
                                 b.const(U[:, k * u:(k + 1) * u], "Ug")]) for k in gates]
        return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=1)

    ra = L.recurrent_activation
    act = L.activation
    if kind == "simple_rnn":
        h_new = b.activation(act, b.op("Add", [p, rec_product([0])]))
    elif kind == "lstm":
        pre = b.op("Add", [p, rec_product(range(4))])
        i, f = b.activation(ra, gate(pre, 0)), b.activation(ra, gate(pre, 1))
        cc, o = b.activation(act, gate(pre, 2)), b.activation(ra, gate(pre, 3))
        c_new = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, cc])])
        h_new = b.op("Mul", [o, b.activation(act, c_new)])
    else:
        if L.reset_after:
            rec = rec_product(range(3))
            if b_rec is not None:
                rec = b.op("Add", [rec, b.const(b_rec, "b_rec")])
            z = b.activation(ra, b.op("Add", [gate(p, 0), gate(rec, 0)]))
            r = b.activation(ra, b.op("Add", [gate(p, 1), gate(rec, 1)]))
            hh = b.activation(act, b.op("Add", [gate(p, 2), b.op("Mul", [r, gate(rec, 2)])]))
        else:
            rec = rec_product([0, 1])
            z = b.activation(ra, b.op("Add", [gate(p, 0), gate(rec, 0)]))
            r = b.activation(ra, b.op("Add", [gate(p, 1), gate(rec, 1)]))
            hd2 = b.op("Mul", [h, rms[2]]) if rms else h
            a3 = b.op("MatMul", [b.op("Mul", [r, hd2]), b.const(U[:, 2 * u:], "Uh")])
            hh = b.activation(act, b.op("Add", [gate(p, 2), a3]))
        h_new = b.op("Add", [hh, b.op("Mul", [z, b.op("Sub", [h, hh])])])
    if mt is not None:   # masked step: the state carries over, the output repeats
        h_new = b.op("Where", [mt, h_new, h])
        if kind == "lstm":
            c_new = b.op("Where", [mt, c_new, c])
    outs = [b.op("Identity", [h_new], name_hint="h")]
    if kind == "lstm":
        outs.append(b.op("Identity", [c_new], name_hint="c"))
    if L.return_sequences:
        outs.append(b.op("Identity", [h_new], name_hint="y"))
    ins = [value_info(h, F32, ["batch", u])]
    if c is not None:
        ins.append(value_info(c, F32, ["batch", u]))
    ins.append(value_info(p, F32, ["batch", G * u]))
    if mt is not None:
        ins.append(value_info(mt, BOOL, ["batch", 1]))
    body = helper.make_graph(b.nodes, g.fresh(f"{kind}_step"), ins,
                             [value_info(o, F32, ["batch", u]) for o in outs])
    n_scan_out = int(L.return_sequences)
    back = int(L.go_backwards)
    out_dir = int(order == "flipped")     # prepend: the processing order reversed
    results = [g.fresh("scan_out") for _ in range(n_states + n_scan_out)]
    attrs = dict(body=body, num_scan_inputs=len(scan_in),
                 scan_input_directions=[back] * len(scan_in))
    if n_scan_out:
        attrs["scan_output_directions"] = [out_dir]
    g.op("Scan", [h0] * n_states + scan_in, results, **attrs)
    if L.return_sequences:
        return g.transpose(results[-1], (1, 0, 2))       # (m, T, u)
    return results[0]


def emit_rnn(g, L, x, seq, mc, order="processing"):
    """SimpleRNN / LSTM / GRU ``L`` on x (m, T, F) -> (m, u), or with return_sequences
    (m, T, u) in processing order (as fastdrop and Keras return a go_backwards layer's
    sequence) or, ``order='flipped'``, that order reversed (Bidirectional's backward
    layer, whose sequence is flipped back before merging)."""
    if native_ok(L, seq, mc):
        return _native_single(g, L, x, mc, order)
    return _scan(g, L, x, seq, mc, order)


def emit_bidirectional(g, B, x, seq, mc):
    """Bidirectional: the forward layer and its go_backwards copy (whose sequence is
    reversed before merging, as fastdrop and Keras do), merged by ``merge_mode``."""
    fl, bl = B.forward_layer, B.backward_layer
    if (not fl.go_backwards and native_ok(fl, seq, mc) and native_ok(bl, seq, mc)
            and not (mc and fl.dropout > 0)):
        y, yh = _native(g, [fl, bl], g.transpose(x, (1, 0, 2)), "bidirectional")
        if B.return_sequences:
            yt = g.transpose(y, (1, 2, 0, 3))             # (2, m, T, u)
        else:
            yt = yh                                       # (2, m, u)
        yf = g.squeeze(g.slice(yt, [0], [1], [0]), [0])
        yb = g.squeeze(g.slice(yt, [1], [2], [0]), [0])
    else:
        # each direction its own op: in MC their input masks differ
        yf = emit_rnn(g, fl, x, seq, mc)
        yb = emit_rnn(g, bl, x, seq, mc, order="flipped")
    mode = B.merge_mode
    if mode == "concat":
        y = g.op("Concat", [yf, yb], axis=-1)
    elif mode == "sum":
        y = g.op("Add", [yf, yb])
    elif mode == "ave":
        y = g.op("Mul", [g.op("Add", [yf, yb]), g.scalar(0.5)])
    else:
        y = g.op("Mul", [yf, yb])
    if B.return_sequences and seq is not None:
        # zeros at masked steps, as fastdrop and Keras give them
        y = g.op("Mul", [y, g.unsqueeze(g.op("Cast", [seq], to=F32), [-1])])
    return y

"""NumPy reference (float64) of the recurrent cells and their backward through time: the
oracle of ``fastdrop.layers.recurrent``.

Semantics are Keras 3's (keras/src/layers/rnn/{simple_rnn,lstm,gru}.py, read 2026-12):

* gates: LSTM i, f, c, o (kernel (F, 4u), recurrent kernel (u, 4u), bias (4u,));
  GRU z, r, h; reset_after=True: bias (2, 3u) = input bias, recurrent bias, and
  hh = act(x W_h + b_in_h + r * (h U_h + b_rec_h)); reset_after=False: bias (3u,) and
  hh = act(x W_h + b_h + (r * h) U_h); h = z * h_prev + (1 - z) * hh.
* dropout masks (variational): drawn once per sequence and reused at every step.
  Keras 3 switches a cell to ``implementation=1`` whenever ``recurrent_dropout > 0``
  and then draws ``dropout_mask_count`` = 4 (LSTM) / 3 (GRU) independent masks for the
  inputs *and* for h_{t-1}, one per gate; with ``recurrent_dropout == 0`` one input mask
  is shared by all gates.  SimpleRNN: one of each.  The LSTM cell state is never
  dropped; GRU's final blend uses the undropped h_{t-1}.
* a masked step (sequence mask False) keeps the state and outputs the previous output.
* go_backwards processes the sequence reversed and returns outputs in processing order.

Masks are passed as float arrays (0 or 1/(1-rate)): ``in_masks`` a list of 1 or G
(m, F) arrays, ``rec_masks`` a list of G (m, u) arrays.
"""
import numpy as np

GATES = {"simple": 1, "lstm": 4, "gru": 3}


def act(kind, x):
    if kind == "tanh":
        return np.tanh(x)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "hard_sigmoid":
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if kind in ("linear", None):
        return x
    from . import activations as _ra       # the other activations of the act kernels
    return _ra.forward(kind, x)


def dact(kind, y):
    """act'(.) expressed through the output y."""
    if kind == "tanh":
        return 1.0 - y * y
    if kind == "sigmoid":
        return y * (1.0 - y)
    if kind == "relu":
        return (y > 0).astype(np.float64)
    if kind == "hard_sigmoid":
        return ((y > 0) & (y < 1)) / 6.0
    if kind in ("linear", None):
        return np.ones_like(y)
    from . import activations as _ra
    return _ra.derivative_from_y(kind, y)


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def rnn_forward(cell, x, W, U, b=None, *, activation="tanh", recurrent_activation="sigmoid",
                reset_after=True, go_backwards=False, return_sequences=False,
                in_masks=None, rec_masks=None, seq=None):
    """x (m, T, F) -> (y, cache); y (m, T, u) or (m, u), float64."""
    x, W, U, b = _f64(x), _f64(W), _f64(U), _f64(b)
    m, T, F = x.shape
    G = GATES[cell]
    u = U.shape[0]
    if go_backwards:
        x = x[:, ::-1]
        seq = None if seq is None else np.asarray(seq)[:, ::-1]
    on = np.ones((m, T), bool) if seq is None else np.asarray(seq, bool)
    ones_in = np.ones((m, F))
    ones_r = np.ones((m, u))
    ims = [ones_in] * G if not in_masks else (
        [_f64(in_masks[0])] * G if len(in_masks) == 1 else [_f64(q) for q in in_masks])
    rms = [ones_r] * G if not rec_masks else [_f64(q) for q in rec_masks]
    Wg = [W[:, g * u:(g + 1) * u] for g in range(G)]
    Ug = [U[:, g * u:(g + 1) * u] for g in range(G)]
    if b is None:
        b_in = np.zeros(G * u)
        b_rec = np.zeros(G * u)
    elif cell == "gru" and reset_after:
        b_in, b_rec = b[0], b[1]
    else:
        b_in, b_rec = b.reshape(-1), np.zeros(G * u)
    bg = [b_in[g * u:(g + 1) * u] for g in range(G)]
    brg = [b_rec[g * u:(g + 1) * u] for g in range(G)]
    h = np.zeros((m, u))
    c = np.zeros((m, u))
    steps = []
    hs = np.zeros((m, T, u))
    for t in range(T):
        xt = x[:, t]
        xin = [xt * ims[g] for g in range(G)]
        hd = [h * rms[g] for g in range(G)]
        st = {"xin": xin, "hd": hd, "hp": h, "cp": c}
        if cell == "simple":
            hn = act(activation, xin[0] @ Wg[0] + bg[0] + hd[0] @ Ug[0])
            cn = c
            st["h"] = hn
        elif cell == "lstm":
            pre = [xin[g] @ Wg[g] + bg[g] + hd[g] @ Ug[g] for g in range(4)]
            i, f, o = (act(recurrent_activation, pre[k]) for k in (0, 1, 3))
            cc = act(activation, pre[2])
            cn = f * c + i * cc
            ac = act(activation, cn)
            hn = o * ac
            st.update(i=i, f=f, cc=cc, o=o, c=cn, ac=ac)
        else:
            z = act(recurrent_activation, xin[0] @ Wg[0] + bg[0] + hd[0] @ Ug[0] + brg[0])
            r = act(recurrent_activation, xin[1] @ Wg[1] + bg[1] + hd[1] @ Ug[1] + brg[1])
            if reset_after:
                rh = hd[2] @ Ug[2] + brg[2]
                hh = act(activation, xin[2] @ Wg[2] + bg[2] + r * rh)
                st["rh"] = rh
            else:
                a3 = r * hd[2]
                hh = act(activation, xin[2] @ Wg[2] + bg[2] + a3 @ Ug[2])
                st["a3"] = a3
            hn = z * h + (1.0 - z) * hh
            cn = c
            st.update(z=z, r=r, hh=hh)
        keep = on[:, t][:, None]
        h = np.where(keep, hn, h)
        c = np.where(keep, cn, c)
        steps.append(st)
        hs[:, t] = h
    y = hs.copy() if return_sequences else h.copy()
    cache = dict(cell=cell, act=activation, rec=recurrent_activation, ra=reset_after,
                 gb=go_backwards, rs=return_sequences, on=on, steps=steps, Wg=Wg, Ug=Ug,
                 ims=ims, rms=rms, m=m, T=T, F=F, u=u, G=G, b_shape=None if b is None
                 else b.shape, shared_in=bool(in_masks) and len(in_masks) == 1)
    return y, cache


def rnn_backward(cache, dy):
    """Backward through time: returns (dx, dW, dU, db) in float64 (db None without bias)."""
    C = cache
    cell, m, T, F, u, G = C["cell"], C["m"], C["T"], C["F"], C["u"], C["G"]
    dy = np.asarray(dy, np.float64)
    Wg, Ug, ims, rms = C["Wg"], C["Ug"], C["ims"], C["rms"]
    dWg = [np.zeros((F, u)) for _ in range(G)]
    dUg = [np.zeros((u, u)) for _ in range(G)]
    dbg = [np.zeros(u) for _ in range(G)]
    dbrg = [np.zeros(u) for _ in range(G)]
    dx = np.zeros((m, T, F))
    dh = np.zeros((m, u))
    dc = np.zeros((m, u))
    for t in range(T - 1, -1, -1):
        st = C["steps"][t]
        if C["rs"]:
            dh = dh + dy[:, t]
        elif t == T - 1:
            dh = dh + dy
        keep = C["on"][:, t][:, None]
        dpre = [None] * G       # input-side pre-activation grads
        drec = [None] * G       # recurrent-side (what multiplies hd_g @ U_g)
        dhp = np.zeros((m, u))
        if cell == "simple":
            dz = dh * dact(C["act"], st["h"])
            dpre[0] = drec[0] = dz
            dcp = dc
        elif cell == "lstm":
            do = dh * st["ac"]
            dct = dc + dh * st["o"] * dact(C["act"], st["ac"])
            di = dct * st["cc"]
            df = dct * st["cp"]
            dcc = dct * st["i"]
            dcp = dct * st["f"]
            dpre = [di * dact(C["rec"], st["i"]), df * dact(C["rec"], st["f"]),
                    dcc * dact(C["act"], st["cc"]), do * dact(C["rec"], st["o"])]
            drec = dpre
        else:
            z, r, hh, hp = st["z"], st["r"], st["hh"], st["hp"]
            da = dh * (1.0 - z) * dact(C["act"], hh)
            dzv = dh * (hp - hh)
            dhp = dh * z
            if C["ra"]:
                drv = da * st["rh"]
                drh = da * r
            else:
                dA3 = da @ Ug[2].T
                drv = dA3 * st["hd"][2]
                drh = None
                dUg[2] += np.where(keep, st["a3"], 0).T @ np.where(keep, da, 0)
                dhp = dhp + np.where(keep, dA3 * r, 0) * rms[2]
            dzp = dzv * dact(C["rec"], z)
            drp = drv * dact(C["rec"], r)
            dpre = [dzp, drp, da]
            drec = [dzp, drp, drh]
            dcp = dc
        # masked rows: no gate gradient; state gradients carry
        dpre = [np.where(keep, q, 0.0) for q in dpre]
        drec = [None if q is None else np.where(keep, q, 0.0) for q in drec]
        for g in range(G):
            dWg[g] += st["xin"][g].T @ dpre[g]
            dbg[g] += dpre[g].sum(0)
            dx[:, t] += (dpre[g] @ Wg[g].T) * ims[g]
            if drec[g] is not None:
                dUg[g] += st["hd"][g].T @ drec[g]
                dbrg[g] += drec[g].sum(0)
                dhp = dhp + (drec[g] @ Ug[g].T) * rms[g]
        dh = np.where(keep, dhp, dh)
        dc = np.where(keep, dcp, dc)
    if C["gb"]:
        dx = dx[:, ::-1]
    dW = np.concatenate(dWg, axis=1)
    dU = np.concatenate(dUg, axis=1)
    db = None
    if C["b_shape"] is not None:
        if cell == "gru" and C["ra"]:
            db = np.stack([np.concatenate(dbg), np.concatenate(dbrg)])
        else:
            db = np.concatenate(dbg)
    return dx, dW, dU, db


def embedding_forward(ids, E):
    return np.asarray(E, np.float64)[np.asarray(ids).astype(np.int64)]


def embedding_backward(ids, dy, V):
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    dy = np.asarray(dy, np.float64).reshape(ids.size, -1)
    dE = np.zeros((V, dy.shape[1]))
    np.add.at(dE, ids, dy)
    return dE


def global_average_pooling1d(x, mask=None):
    x = np.asarray(x, np.float64)
    if mask is None:
        return x.mean(1)
    mk = np.asarray(mask, np.float64)[:, :, None]
    return (x * mk).sum(1) / mk.sum(1)


def global_max_pooling1d(x):
    return np.asarray(x, np.float64).max(1)

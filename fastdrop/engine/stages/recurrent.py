"""Recurrent-family stages: SimpleRNN / LSTM / GRU (the whole time loop in C, variational
masks keyed per sample), Bidirectional (two RNN stages, reversed inputs), Embedding (carries
the padding mask), and the 1-D global poolings (mask-aware)."""
import numpy as np

from ... import _core
from ..stage import Stage


_REC_PART = 10


def _mask_bytes(rows, per_sample):
    return ((rows * per_sample + 7) // 8 + 63) // 64 * 64


class RNNStage(Stage):
    """One recurrent layer; ``part_base`` offsets the noise parts (Bidirectional)."""

    def __init__(self, layer, index=0, part_base=0):
        super().__init__([layer], index)
        self.layer = layer
        self.part_base = part_base

    @property
    def noisy(self):
        return self.layer.noisy

    def bind(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[0] is None:
            raise ValueError(f"layer {self.layer.name!r} expects inputs (batch, timesteps, "
                             f"features); got per-sample shape {in_shape}")
        return super().bind(in_shape)

    def buffers(self, capacity):
        L = self.layer
        T, F = self.in_shape
        ws = _core.rnn_workspace_floats(L.spec(F), capacity, T, L.n_in_masks, L.n_rec_masks)
        return {"out": ((capacity,) + self.out_shape, np.float32),
                "dx": ((capacity,) + self.in_shape, np.float32),
                "ws": ((int(ws),), np.float32),
                "in_mask": ((max(1, L.n_in_masks), _mask_bytes(capacity, F)), np.uint8),
                "rec_mask": ((max(1, L.n_rec_masks), _mask_bytes(capacity, L.units)),
                             np.uint8),
                "seq": ((capacity, T), np.uint8)}

    def _prepare(self, ctx):
        L = self.layer
        T, F = self.in_shape
        m = ctx.m
        in_mask = rec_mask = None
        in_scale = rec_scale = 1.0
        if ctx.noise and L.n_in_masks:
            in_mask = self.buf["in_mask"][:L.n_in_masks]
            for k in range(L.n_in_masks):
                ctx.mask(in_mask[k], L.dropout, F, L.noise_index, L.seed,
                         part=self.part_base + 1 + k)
            in_scale = float(np.float32(1.0 / (1.0 - L.dropout)))
        if ctx.noise and L.n_rec_masks:
            rec_mask = self.buf["rec_mask"][:L.n_rec_masks]
            for k in range(L.n_rec_masks):
                ctx.mask(rec_mask[k], L.recurrent_dropout, L.units, L.noise_index, L.seed,
                         part=self.part_base + _REC_PART + 1 + k)
            rec_scale = float(np.float32(1.0 / (1.0 - L.recurrent_dropout)))
        seq = None
        if ctx.seq_mask is not None:
            sm = ctx.seq_mask
            if sm.shape != (m, T):
                raise ValueError(f"layer {L.name!r}: sequence mask of shape {sm.shape} "
                                 f"does not match inputs ({m}, {T}, ...)")
            seq = self.buf["seq"][:m]
            np.not_equal(sm, 0, out=seq.view(np.bool_))
        self._call = (in_mask, in_scale, rec_mask, rec_scale, seq)

    def forward(self, ctx, x):
        L = self.layer
        if x.ndim != 3 or x.shape[1:] != self.in_shape:
            raise ValueError(f"layer {L.name!r} expects inputs of shape (batch, "
                             f"{self.in_shape[0]}, {self.in_shape[1]}); got {x.shape}")
        x = np.ascontiguousarray(x, np.float32)
        self._prepare(ctx)
        in_mask, in_scale, rec_mask, rec_scale, seq = self._call
        y = self.buf["out"][:ctx.m]
        _core.rnn_forward(L.spec(self.in_shape[1]), x, L.kernel, L.recurrent_kernel,
                          L.bias if L.use_bias else None, y, self.buf["ws"], in_mask,
                          in_scale, rec_mask, rec_scale, seq)
        return y

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        T, F = self.in_shape
        in_mask, in_scale, rec_mask, rec_scale, seq = self._call
        dy = np.ascontiguousarray(dy, np.float32).reshape((ctx.m,) + self.out_shape)
        dx = self.buf["dx"][:ctx.m] if need_dx else None
        _core.rnn_backward(L.spec(F), ctx.m, T, L.kernel, L.recurrent_kernel, dy, dx,
                           L.dkernel, L.drecurrent_kernel, L.dbias if L.use_bias else None,
                           self.buf["ws"], in_mask, in_scale, rec_mask, rec_scale, seq)
        return dx


def validate_token_ids(x, input_dim, name="inputs"):
    """ValueError unless every value of x is an integer in [0, input_dim)."""
    x = np.asarray(x)
    if x.size == 0:
        return
    if x.dtype.kind == "f":
        if not np.isfinite(x).all() or (np.floor(x) != x).any():
            raise ValueError(f"{name} to Embedding must be integer token ids; got "
                             "non-integral or non-finite values")
    elif x.dtype.kind not in "iub":
        raise ValueError(f"{name} to Embedding must be integer token ids, got {x.dtype}")
    lo, hi = x.min(), x.max()
    if lo < 0:
        raise ValueError(f"{name} to Embedding must be token ids in [0, {input_dim}); got "
                         f"a negative id {lo}")
    if hi >= input_dim:
        raise ValueError(f"{name} to Embedding must be token ids in [0, input_dim="
                         f"{input_dim}); got id {hi}")


class EmbeddingStage(Stage):
    def __init__(self, layer, index=0):
        super().__init__([layer], index)
        self.layer = layer

    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["mask"] = ((capacity,) + self.in_shape, np.bool_)
        return b

    def forward(self, ctx, x):
        L = self.layer
        if x.shape[1:] != self.in_shape:
            raise ValueError(f"layer {L.name!r} expects inputs of shape (batch, "
                             f"{', '.join(map(str, self.in_shape))}); got {x.shape}")
        validate_token_ids(x, L.input_dim)
        x = np.ascontiguousarray(x, np.float32)
        self._ids = x
        y = self.buf["out"][:ctx.m]
        _core.embedding_forward(x.reshape(-1), L.embeddings, y)
        if L.mask_zero:
            np.not_equal(x, 0, out=self.buf["mask"][:ctx.m])
        return y

    def mask_out(self, ctx, mask):
        if not self.layer.mask_zero:
            return None
        return self.buf["mask"][:ctx.m]

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        if L.trainable and getattr(L, "dembeddings", None) is not None:
            dy = np.ascontiguousarray(dy, np.float32)
            _core.embedding_backward(self._ids.reshape(-1), dy, L.dembeddings)
        if need_dx:
            dx = self.buf["dx"][:ctx.m]
            dx[...] = 0.0
            return dx
        return None


class BidirectionalStage(Stage):
    def __init__(self, layer, index=0):
        super().__init__([layer], index)
        self.layer = layer
        self.fwd = RNNStage(layer.forward_layer, index, part_base=0)
        self.bwd = RNNStage(layer.backward_layer, index, part_base=100)

    @property
    def noisy(self):
        return self.layer.noisy

    def bind(self, in_shape):
        self.fwd.bind(in_shape)
        self.bwd.bind(in_shape)
        return super().bind(in_shape)

    def buffers(self, capacity):
        b = super().buffers(capacity)
        for tag, st in (("f/", self.fwd), ("b/", self.bwd)):
            for k, v in st.buffers(capacity).items():
                b[tag + k] = v
        return b

    def forward(self, ctx, x):
        for st in (self.fwd, self.bwd):
            st.layer.noise_index = self.layer.noise_index
        self.fwd.buf = {k[2:]: v for k, v in self.buf.items() if k.startswith("f/")}
        self.bwd.buf = {k[2:]: v for k, v in self.buf.items() if k.startswith("b/")}
        yf = self.fwd.forward(ctx, x)
        yb = self.bwd.forward(ctx, x)
        if self.layer.return_sequences:
            yb = yb[:, ::-1]
        out = self.buf["out"][:ctx.m]
        mode = self.layer.merge_mode
        if mode == "concat":
            u = yf.shape[-1]
            out[..., :u] = yf
            out[..., u:] = yb
        elif mode == "sum":
            np.add(yf, yb, out=out)
        elif mode == "ave":
            np.add(yf, yb, out=out)
            out *= np.float32(0.5)
        else:
            np.multiply(yf, yb, out=out)
        # Keras: with return_sequences and a mask, both directions output zeros at masked
        # steps (keras/src/layers/rnn/bidirectional.py sets zero_output_for_mask), so the
        # merged output is zero there, whatever merge_mode
        self._zero = None
        if self.layer.return_sequences and ctx.seq_mask is not None:
            keep = np.asarray(ctx.seq_mask).reshape(ctx.m, -1).astype(bool)
            if not keep.all():
                self._zero = ~keep
                out[self._zero] = 0.0
        return out

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        dy = dy.reshape((m,) + self.out_shape)
        if getattr(self, "_zero", None) is not None:     # zeroed outputs pass no gradient
            dy = np.array(dy)
            dy[self._zero] = 0.0
        yf = self.fwd.buf["out"][:m]
        yb = self.bwd.buf["out"][:m]
        rs = self.layer.return_sequences
        ybm = yb[:, ::-1] if rs else yb
        mode = self.layer.merge_mode
        if mode == "concat":
            u = yf.shape[-1]
            dyf, dyb = dy[..., :u], dy[..., u:]
        elif mode == "sum":
            dyf = dyb = dy
        elif mode == "ave":
            dyf = dyb = dy * np.float32(0.5)
        else:
            dyf, dyb = dy * ybm, dy * yf
        if rs:
            dyb = dyb[:, ::-1]
        dxf = self.fwd.backward(ctx, np.ascontiguousarray(dyf), need_dx)
        dxb = self.bwd.backward(ctx, np.ascontiguousarray(dyb), need_dx)
        if not need_dx:
            return None
        dx = self.buf["dx"][:m]
        np.add(dxf, dxb, out=dx)
        return dx

    def mask_out(self, ctx, mask):
        return mask if self.layer.return_sequences else None


class GlobalAveragePooling1DStage(Stage):
    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["w"] = ((capacity, self.in_shape[0]), np.float32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        T, F = self.in_shape
        w = self.buf["w"][:m]
        if ctx.seq_mask is not None:
            np.copyto(w, ctx.seq_mask)
            cnt = w.sum(1, keepdims=True)
            np.maximum(cnt, 1.0, out=cnt)
            w /= cnt
        else:
            w[...] = np.float32(1.0 / T)
        out = self.buf["out"][:m].reshape(m, F)
        np.matmul(w[:, None, :], x.reshape(m, T, F), out=out[:, None, :])
        return self.buf["out"][:m]

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        T, F = self.in_shape
        dx = self.buf["dx"][:m]
        np.multiply(self.buf["w"][:m, :, None], dy.reshape(m, 1, F), out=dx)
        return dx

    def mask_out(self, ctx, mask):
        return None


class GlobalMaxPooling1DStage(Stage):
    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["arg"] = ((capacity, self.in_shape[1]), np.intp)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        T, F = self.in_shape
        x = x.reshape(m, T, F)
        arg = self.buf["arg"][:m]
        np.argmax(x, axis=1, out=arg)
        out = self.buf["out"][:m].reshape(m, F)
        np.max(x, axis=1, out=out)
        return self.buf["out"][:m]

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        T, F = self.in_shape
        dx = self.buf["dx"][:m]
        dx[...] = 0.0
        np.put_along_axis(dx, self.buf["arg"][:m][:, None, :], dy.reshape(m, 1, F), axis=1)
        return dx

    def mask_out(self, ctx, mask):
        return None


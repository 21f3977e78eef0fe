"""Stages of the core layers: Dense (+activation, +Dropout, fused), activations, and the
noise layers.  See ``stage.py`` for the contract."""
import numpy as np

from ... import _core
from ... import random as _random
from .. import activations as _acts
from ..context import MC, TRAIN
from ..plan import fusion_rule
from ..stage import IdentityStage, Stage


def _prod(shape):
    return int(np.prod(shape, dtype=np.int64))


class DenseStage(Stage):
    """Dense (+ activation) (+ element-wise Dropout) as one GEMM with a fused epilogue:
    bias, ReLU and the dropout bit mask are applied to each output tile.  Other
    activations run right after the GEMM on the same buffer.  DropConnect masks the
    kernel once per step (per pass in MC).  On N-D inputs the GEMM runs over all leading
    positions at once (rows = samples × positions)."""

    def __init__(self, dense, act, dropout, params=None):
        layers = [dense] + ([dropout] if dropout is not None else [])
        super().__init__(layers)
        self.dense = dense
        fn = _acts.get(act, params)
        self.relu = fn is not None and fn.kernel == "relu"
        self.fn = None if (fn is None or self.relu) else fn
        self.act = "linear" if fn is None else ("relu" if self.relu else act)
        # the GEMM writes into "z" when the activation needs its input or changes the shape
        self.keep_z = self.fn is not None and (self.fn.needs == "z" or self.fn.kernel == "glu")
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        if self.fn is not None and self.dropout is not None:
            raise ValueError("DenseStage fuses Dropout only after a linear or relu activation")
        self.noisy = self.dropout is not None or dense.drop_connect > 0
        # mixed_bfloat16: the GEMMs (forward, dX, dW) on bf16 operands with fp32
        # accumulation; the kernel's bf16 copy is made once per forward (once per
        # optimizer step in training) and reused by the backward dX GEMM
        self.bf16 = getattr(dense, "compute_dtype", "float32") == "bfloat16"
        self._gemm = _core.gemm_bf16 if self.bf16 else _core.gemm
        self._w16 = None

    def infer_shape(self, in_shape):
        units = self.dense.units
        return tuple(in_shape[:-1]) + (units if self.fn is None else self.fn.out_cols(units),)

    def bind(self, in_shape):
        out = super().bind(in_shape)
        self.rows = _prod(in_shape[:-1])        # GEMM rows per sample
        self.fan_in = in_shape[-1]
        self.flat = len(in_shape) == 1          # (m, features) in and out: no reshapes
        self.out_units = out[-1]
        return out

    def buffers(self, capacity):
        d = self.dense
        rows = capacity * self.rows
        b = {"out": ((rows, self.out_units), np.float32), "dz": ((rows, d.units), np.float32),
             "dx": ((rows, self.fan_in), np.float32)}
        if self.keep_z:
            b["z"] = ((rows, d.units), np.float32)
        if self.dropout is not None:
            b["mask"] = (((rows * d.units + 7) // 8,), np.uint8)
        if d.drop_connect > 0:
            b["wm"] = ((self.fan_in, d.units), np.float32)
            b["wmask"] = (((self.fan_in * d.units + 7) // 8,), np.uint8)
        return b

    def _kernel(self):
        """The kernel operand of the forward and dX GEMMs: the fp32 master weights, or
        under mixed_bfloat16 their bf16 copy, refreshed here (once per forward)."""
        d = self.dense
        if not self.bf16:
            return d.kernel
        if self._w16 is None or self._w16.shape != d.kernel.shape:
            self._w16 = np.empty(d.kernel.shape, np.uint16)
        _core.f32_to_bf16(d.kernel, self._w16)
        return self._w16

    def _masked_kernel(self, seed_key):
        d = self.dense
        w = self.buf["wm"]
        wmask = self.buf["wmask"]
        _core.dropout_forward(d.kernel.reshape(-1), w.reshape(-1), seed_key, d.drop_connect,
                              wmask)
        return w

    def _draw_mask(self, ctx):
        drop = self.dropout
        return ctx.mask(self.buf["mask"], drop.rate, self.rows * self.dense.units,
                        drop.noise_index, drop.seed)

    def _activate(self, h, M):
        """The activation, from the GEMM output h (the "z" buffer when kept) to "out"."""
        if self.fn is None:
            return self.buf["out"][:M]
        y = self.buf["out"][:M]
        self.fn.forward(h, y)
        return y

    def _out(self, ctx, y):
        return y if self.flat else y.reshape((ctx.m,) + self.out_shape)

    def forward(self, ctx, x):
        d = self.dense
        M = ctx.m * self.rows
        x2 = x if self.flat else x.reshape(M, self.fan_in)
        h = (self.buf["z"] if self.keep_z else self.buf["out"])[:M]
        self._x = x2
        self._mask = None
        self._wmask = None
        kernel = self._kernel()
        self._wk = kernel
        if not ctx.noise or not self.noisy:
            # inference (or nothing noisy): one GEMM with the bias/ReLU epilogue
            self._gemm(x2, kernel, h, False, False, 1.0, 0.0, d.bias, self.relu)
            return self._out(ctx, self._activate(h, M))
        drop = self.dropout
        if ctx.mode == MC and (d.drop_connect > 0 or (ctx.tiled and drop is not None)):
            s = ctx.samples * self.rows
            if d.drop_connect > 0:
                # one kernel mask per pass: a GEMM per pass
                for p in range(ctx.passes):
                    w = self._masked_kernel(_random.derive(ctx.seed, _random.KEY_DROPCONNECT,
                                                           d._model_index, p))
                    self._gemm(x2[p * s:(p + 1) * s], w, h[p * s:(p + 1) * s], False, False,
                               1.0, 0.0, d.bias, self.relu)
            else:
                # every pass sees the same input rows: one GEMM for the samples, then T
                # copies that differ only in their masks
                self._gemm(x2[:s], kernel, h[:s], False, False, 1.0, 0.0, d.bias, self.relu)
                h.reshape(ctx.passes, s, d.units)[1:] = h[:s]
            if drop is not None:
                flat = h.reshape(-1)
                _core.dropout_apply(flat, self._draw_mask(ctx), flat, drop.scale)
            return self._out(ctx, self._activate(h, M))
        mask = None if drop is None else self._draw_mask(ctx)
        self._mask = mask
        w = kernel
        if d.drop_connect > 0:
            w = self._masked_kernel(_random.derive(ctx.seed, _random.KEY_DROPCONNECT,
                                                   d._model_index, ctx.step))
            self._wmask = self.buf["wmask"]
        self._gemm(x2, w, h, False, False, 1.0, 0.0, d.bias, self.relu, mask,
                   drop.scale if mask is not None else 1.0)
        return self._out(ctx, self._activate(h, M))

    def noise_masks(self, m):
        out = {}
        d = self.dense
        if self._mask is not None:
            n = m * self.rows * d.units
            out[self.dropout.name] = np.unpackbits(self._mask, count=n, bitorder="little") \
                .astype(bool).reshape((m,) + self.out_shape)
        if self._wmask is not None:
            out[d.name + "/kernel"] = np.unpackbits(
                self._wmask, count=d.kernel.size, bitorder="little").astype(bool) \
                .reshape(d.kernel.shape)
        return out

    def backward(self, ctx, dy, need_dx):
        d = self.dense
        M = ctx.m * self.rows
        dh = dy.reshape(M, self.out_units)
        h = self.buf["out"][:M]
        mask = self._mask
        dz = self.buf["dz"][:M]
        bias_done = False
        scale = self.dropout.scale if mask is not None else 1.0
        if self.relu or (mask is not None and self.fn is None):
            # one pass: ReLU sign / dropout mask, and the bias gradient (column sums)
            _core.dense_backward_act(dh, h, None if self.relu else mask, scale, self.relu, dz,
                                     d.dbias if d.use_bias else None)
            bias_done = True
        elif self.fn is not None:
            z = self.buf["z"][:M] if self.keep_z else None
            self.fn.backward(dh, z, h, dz)
        else:
            dz = dh
        self._gemm(self._x, dz, d.dkernel, True, False, 1.0, 0.0)
        w = self._wk if self.bf16 else d.kernel
        if self._wmask is not None:
            flat = d.dkernel.reshape(-1)
            _core.dropout_apply(flat, self._wmask, flat,
                                float(np.float32(1.0 / (1.0 - d.drop_connect))))
            w = self.buf["wm"]
        if d.use_bias and not bias_done:
            _core.colsum(dz, d.dbias)
        if not need_dx:
            return None
        dx = self.buf["dx"][:M]
        self._gemm(dz, w, dx, False, True, 1.0, 0.0)
        return dx.reshape((ctx.m,) + self.in_shape)


def _kind(layer):
    """The layer's declared kind (``Layer.kind``): rules match kinds, never layer classes."""
    return getattr(layer, "kind", None)


def _plan_act(layer):
    return getattr(layer, "_plan_act", None) or layer.activation


def _kernel(name, params):
    """The C kernel an activation resolves to ('linear' for none)."""
    fn = _acts.get(name, params)
    return "linear" if fn is None else fn.kernel


@fusion_rule
def dense_rule(layers, i):
    """Dense [+ Activation] [+ element-wise Dropout] -> one DenseStage (the activation,
    any of them, on the GEMM's output; Dropout fused after a linear or relu one)."""
    layer = layers[i]
    if _kind(layer) != "dense":
        return None
    act, params = _acts.spec_of(layer)
    j = i + 1
    if _kernel(act, params) == "linear" and j < len(layers) \
            and _kind(layers[j]) == "activation" \
            and _kernel(*_acts.spec_of(layers[j])) != "linear":
        act, params = _acts.spec_of(layers[j])
        j += 1
    drop = None
    if _kernel(act, params) in ("linear", "relu") and j < len(layers) \
            and _kind(layers[j]) == "dropout" and layers[j].elementwise:
        drop = layers[j]
        j += 1
    return (lambda: DenseStage(layer, act, drop, params)), j - i


class ActivationStage(Stage):
    """An activation on the last axis of any tensor (element-wise on the flat buffer,
    row-wise on the (rows, last axis) view)."""

    def __init__(self, layer, act, params=None):
        super().__init__([layer])
        self.act = act
        self.fn = _acts.get(act, params)

    def infer_shape(self, in_shape):
        return tuple(in_shape) if self.fn is None else self.fn.out_shape(in_shape)

    def buffers(self, capacity):
        return {} if self.fn is None else super().buffers(capacity)

    def forward(self, ctx, x):
        if self.fn is None:
            return x
        self._x = x
        y = self.buf["out"][:ctx.m]
        self.fn.forward(x, y)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        if self.fn is None:
            return dy
        dx = self.buf["dx"][:ctx.m]
        fn = self.fn
        fn.backward(np.ascontiguousarray(dy, np.float32), self._x if fn.needs == "z" else None,
                    self.buf["out"][:ctx.m], dx)
        return dx


__all__ = ["DenseStage", "ActivationStage", "dense_rule"]

"""Noise stages: Dropout (element-wise or with a broadcast ``noise_shape``),
GaussianDropout and AlphaDropout, each its own stage when no fusion rule took it."""
import numpy as np

from ... import _core
from ..context import MC
from ..stage import Stage
from .core import _prod


class _NoiseStage(Stage):
    """A noise layer as its own stage: identity without noise; with noise
    ``_noise_forward`` draws the call's noise and ``_noise_backward`` applies it to the
    gradient."""

    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer
        self.noisy = layer.rate > 0

    def bind(self, in_shape):
        out = super().bind(in_shape)
        self.dim = _prod(in_shape)
        return out

    def forward(self, ctx, x):
        self._active = ctx.noise and self.layer.rate > 0
        if not self._active:
            return x
        y = self.buf["out"][:ctx.m]
        self._noise_forward(ctx, x.reshape(-1), y.reshape(-1))
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        if not self._active:
            return dy
        dx = self.buf["dx"][:ctx.m]
        self._noise_backward(ctx, dy.reshape(-1), dx.reshape(-1))
        return dx


class DropoutStage(_NoiseStage):
    """A Dropout not fused into a Dense (on inputs, after other layers, or with a
    noise_shape: the mask is drawn at the broadcast shape and expanded)."""

    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["mask"] = (((capacity * self.dim + 7) // 8,), np.uint8)
        return b

    def _make_mask(self, ctx):
        layer = self.layer
        out = self.buf["mask"]
        shared, mshape = layer.mask_shape(self.in_shape)
        if not shared and mshape == self.in_shape:
            return ctx.mask(out, layer.rate, self.dim, layer.noise_index, layer.seed)
        k = _prod(mshape)
        if shared:   # one mask per step (per pass in MC) shared by every sample
            passes = ctx.passes if ctx.mode == MC else 1
            rows = ctx.m // passes
            keep = np.empty((passes, k), bool)
            small = np.empty((k + 7) // 8, np.uint8)
            for p in range(passes):
                _core.dropout_mask(k, ctx.noise_seed(layer.noise_index, layer.seed,
                                                     pass_index=p), layer.rate, small)
                keep[p] = np.unpackbits(small, count=k, bitorder="little").astype(bool)
            full = np.broadcast_to(keep.reshape((passes, 1) + mshape),
                                   (passes, rows) + self.in_shape)
        else:
            small = np.empty((ctx.m * k + 7) // 8, np.uint8)
            ctx.mask(small, layer.rate, k, layer.noise_index, layer.seed)
            keep = np.unpackbits(small, count=ctx.m * k, bitorder="little").astype(bool)
            full = np.broadcast_to(keep.reshape((ctx.m,) + mshape), (ctx.m,) + self.in_shape)
        bits = np.packbits(full.reshape(-1), bitorder="little")
        view = out[:bits.size]
        view[...] = bits
        return view

    def noise_masks(self, m):
        if not getattr(self, "_active", False):
            return {}
        keep = np.unpackbits(self._mask, count=m * self.dim, bitorder="little")
        return {self.layer.name: keep.astype(bool).reshape((m,) + self.in_shape)}

    def _noise_forward(self, ctx, x, y):
        self._mask = self._make_mask(ctx)
        _core.dropout_apply(x, self._mask, y, self.layer.scale)

    def _noise_backward(self, ctx, dy, dx):
        _core.dropout_apply(dy, self._mask, dx, self.layer.scale)


class GaussianDropoutStage(_NoiseStage):
    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["noise"] = ((capacity * self.dim,), np.float32)
        return b

    def _noise_forward(self, ctx, x, y):
        n = ctx.m * self.dim
        noise = self.buf["noise"][:n]
        layer = self.layer
        if ctx.mode == MC:
            s = ctx.samples * self.dim
            for p in range(ctx.passes):
                _core.gaussian_noise_range(ctx.offset * self.dim, noise[p * s:(p + 1) * s],
                                           ctx.noise_seed(layer.noise_index, layer.seed,
                                                          pass_index=p), layer.stddev)
        elif ctx.offset:      # TRAIN rows [offset, offset + m) of a global batch
            _core.gaussian_noise_range(ctx.offset * self.dim, noise,
                                       ctx.noise_seed(layer.noise_index, layer.seed),
                                       layer.stddev)
        else:
            _core.gaussian_noise(noise, ctx.noise_seed(layer.noise_index, layer.seed),
                                 layer.stddev)
        _core.mul(x, noise, y)

    def _noise_backward(self, ctx, dy, dx):
        _core.mul(dy, self.buf["noise"][:ctx.m * self.dim], dx)


class AlphaDropoutStage(DropoutStage):
    def _noise_forward(self, ctx, x, y):
        layer = self.layer
        self._mask = ctx.mask(self.buf["mask"], layer.rate, self.dim, layer.noise_index,
                              layer.seed)
        a, b = layer.affine
        _core.alpha_dropout_apply(x, self._mask, y, a, b, layer.ALPHA_P)

    def _noise_backward(self, ctx, dy, dx):
        _core.dropout_apply(dy, self._mask, dx, self.layer.affine[0])


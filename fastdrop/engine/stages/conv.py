"""Convolution-family stages and their fusion rules: Conv2D as an implicit GEMM with a
fused epilogue (bias, relu, Dropout / SpatialDropout2D mask), Conv2D + BatchNormalization
(BN folded into the kernel at INFER/MC), Conv2D [+ relu] + MaxPooling2D (one fused
inference kernel, ``ConvPoolStage``), pooling, global pooling, SpatialDropout2D,
BatchNormalization.  Rules match layers by their declared ``kind``."""
import numpy as np

from ... import _core
from .. import activations as _acts
from ..plan import fusion_rule
from ..stage import Stage
from .core import _kind


def _noise_index(layer):
    idx = getattr(layer, "noise_index", None)
    return 1 if idx is None else idx


def _flat(a):
    return a.reshape(-1)


def _grad(layer, name):
    """layer.d<name> when the variable trains (None otherwise)."""
    if not layer.trainable:
        return None
    return getattr(layer, "d" + name, None)


class ConvStage(Stage):
    """Conv2D (+relu) (+Dropout | SpatialDropout2D) as one implicit GEMM with a fused
    epilogue.  layers: the conv, then the fused Activation / dropout layers.
    act: any other activation (``fastdrop.engine.activations``), run on the conv's output
    buffer right after it, over the channel axis for the row-wise ones (no dropout fused
    then)."""

    def __init__(self, conv, relu=False, dropout=None, layers=None, act=None):
        super().__init__(layers or [conv])
        self.conv = conv
        self.relu = bool(relu)
        self.fn = act
        if act is not None and (relu or dropout is not None):
            raise ValueError("ConvStage runs a non-relu activation without a fused epilogue")
        self.keep_z = act is not None and (act.needs == "z" or act.kernel == "glu")
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.spatial = _kind(self.dropout) == "spatial_dropout2d"
        self.noisy = self.dropout is not None
        self._mask = self._chmask = None
        self._x = None

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.geom = self.conv.geometry(self.in_shape)
        self.conv_shape = (self.geom[12], self.geom[13], self.geom[14])
        self.out_shape = self.conv_shape if self.fn is None else \
            self.fn.out_shape(self.conv_shape)
        return self.out_shape

    def buffers(self, capacity):
        oh, ow, oc = self.conv_shape
        b = {"out": ((capacity,) + self.out_shape, np.float32),
             "dx": ((capacity,) + self.in_shape, np.float32)}
        if self.relu or self.dropout is not None or self.fn is not None:
            b["dz"] = ((capacity,) + self.conv_shape, np.float32)
        if self.keep_z:
            b["z"] = ((capacity,) + self.conv_shape, np.float32)
        if self.dropout is not None:
            bits = capacity * (oc if self.spatial else oh * ow * oc)
            b["mask"] = (((bits + 7) // 8,), np.uint8)
        return b

    def _g(self, m):
        return (m,) + self.geom[1:]

    def forward(self, ctx, x):
        m = ctx.m
        conv = self.conv
        oh, ow, oc = self.conv_shape
        y = self.buf["out"][:m]
        h = self.buf["z"][:m] if self.keep_z else y
        mask = chmask = None
        scale = 1.0
        if self.dropout is not None and ctx.noise:
            d = self.dropout
            per = oc if self.spatial else oh * ow * oc
            bits = ctx.mask(self.buf["mask"], d.rate, per, _noise_index(d), d.seed)
            scale = d.scale
            if self.spatial:
                chmask = bits
            else:
                mask = bits
        self._mask, self._chmask, self._scale = mask, chmask, scale
        bias = conv.bias if conv.use_bias else None
        if (not ctx.training and mask is None and chmask is None and self.fn is None
                and _core.conv2d_infer(self._g(m), None, _flat(x), _flat(conv.kernel),
                                       _flat(h), bias, self.relu)):
            # inference: the direct kernel on prepacked weights (bitwise the same outputs)
            self._x = None
            return y
        _core.conv2d_forward(self._g(m), _flat(x), _flat(conv.kernel), _flat(h), bias,
                             self.relu, mask, chmask, scale)
        if self.fn is not None:
            self.fn.forward(h, y)
        self._x = x
        return y

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        conv = self.conv
        oh, ow, oc = self.conv_shape
        if self.fn is not None:
            dz = self.buf["dz"][:m]
            self.fn.backward(np.ascontiguousarray(dy, np.float32),
                             self.buf["z"][:m] if self.keep_z else None,
                             self.buf["out"][:m], dz)
            dy = dz
        dkernel = _grad(conv, "kernel")
        dbias = _grad(conv, "bias") if conv.use_bias else None
        dy = np.ascontiguousarray(dy, np.float32).reshape(m, oh, ow, oc)
        dx = self.buf["dx"][:m] if need_dx else None
        dk = None if dkernel is None else _flat(dkernel)
        dxf = None if dx is None else _flat(dx)
        if self.relu or self._mask is not None or self._chmask is not None:
            # the epilogue's backward runs chunk by chunk inside the conv backward
            h = _flat(self.buf["out"][:m]) if self.relu else None
            _core.conv2d_backward_act(self._g(m), _flat(dy), _flat(self.buf["dz"][:m]),
                                      _flat(self._x), _flat(conv.kernel), h, self._mask,
                                      self._chmask, self._scale, self.relu, dk, dbias, dxf)
        else:
            _core.conv2d_backward(self._g(m), _flat(dy), _flat(self._x), _flat(conv.kernel),
                                  dk, dbias, dxf)
        return dx


class PoolStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.geom = self.layer.geometry(self.in_shape)
        self.out_shape = (self.geom[10], self.geom[11], self.geom[3])
        return self.out_shape

    def buffers(self, capacity):
        b = super().buffers(capacity)
        if self.layer.is_max:
            b["arg"] = ((capacity,) + self.out_shape, np.int32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        y = self.buf["out"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.pool2d_forward((m,) + self.geom[1:], self.layer.is_max, _flat(x), _flat(y), arg)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        dx = self.buf["dx"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.pool2d_backward((m,) + self.geom[1:], self.layer.is_max,
                              _flat(np.ascontiguousarray(dy, np.float32)), _flat(dx), arg)
        return dx


class GlobalPoolStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer

    def buffers(self, capacity):
        b = super().buffers(capacity)
        if self.layer.is_max:
            b["arg"] = ((capacity, self.in_shape[2]), np.int32)
        return b

    def forward(self, ctx, x):
        m = ctx.m
        h, w, c = self.in_shape
        y = self.buf["out"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.global_pool_forward(m, h * w, c, self.layer.is_max, _flat(x), _flat(y), arg)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        m = ctx.m
        h, w, c = self.in_shape
        dx = self.buf["dx"][:m]
        arg = _flat(self.buf["arg"][:m]) if self.layer.is_max else None
        _core.global_pool_backward(m, h * w, c, self.layer.is_max,
                                   _flat(np.ascontiguousarray(dy, np.float32)), _flat(dx), arg)
        return dx


class SpatialDropoutStage(Stage):
    noisy = True

    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer
        self._mask = None

    def buffers(self, capacity):
        b = super().buffers(capacity)
        b["mask"] = (((capacity * self.in_shape[-1] + 7) // 8,), np.uint8)
        return b

    def forward(self, ctx, x):
        L = self.layer
        m = ctx.m
        if not ctx.noise or L.rate == 0:
            self._mask = None
            return x
        h, w, c = self.in_shape
        self._mask = ctx.mask(self.buf["mask"], L.rate, c, _noise_index(L), L.seed)
        y = self.buf["out"][:m]
        _core.channel_mask_apply(m, h * w, c, _flat(x), self._mask, _flat(y), L.scale)
        return y

    def backward(self, ctx, dy, need_dx):
        if not need_dx:
            return None
        if self._mask is None:
            return dy
        m = ctx.m
        h, w, c = self.in_shape
        dx = self.buf["dx"][:m]
        _core.channel_mask_apply(m, h * w, c, _flat(np.ascontiguousarray(dy, np.float32)),
                                 self._mask, _flat(dx), self.layer.scale)
        return dx


class BatchNormStage(Stage):
    def __init__(self, layer):
        super().__init__([layer])
        self.layer = layer
        self._train = False
        self._x = None

    def buffers(self, capacity):
        b = super().buffers(capacity)
        c = self.in_shape[-1]
        b["mean"] = ((c,), np.float32)
        b["invstd"] = ((c,), np.float32)
        return b

    def _rows(self, m):
        return m * int(np.prod(self.in_shape[:-1], dtype=np.int64))

    def forward(self, ctx, x):
        L = self.layer
        m = ctx.m
        c = self.in_shape[-1]
        rows = self._rows(m)
        y = self.buf["out"][:m]
        gamma = L.gamma if L.scale else None
        beta = L.beta if L.center else None
        self._train = ctx.training and L.trainable
        self._valid = None
        if self._train and ctx.seq_mask is not None:
            keep = np.asarray(ctx.seq_mask).reshape(m, -1).astype(bool)
            if not keep.all():
                return self._masked_train_forward(x, y, keep, gamma, beta)
        if self._train:
            _core.batchnorm_train_forward(rows, c, _flat(x), _flat(y), self.buf["mean"],
                                          self.buf["invstd"], gamma, beta, L.epsilon,
                                          L.moving_mean, L.moving_variance, L.momentum)
        else:
            self.buf["mean"][...] = L.moving_mean
            _core.batchnorm_infer_forward(rows, c, _flat(x), _flat(y), L.moving_mean,
                                          L.moving_variance, gamma, beta, L.epsilon,
                                          self.buf["invstd"])
        self._x = x
        return y

    def _masked_train_forward(self, x, y, keep, gamma, beta):
        """TRAIN with a sequence mask (BatchNormalization after Embedding(mask_zero=True)
        and a layer that keeps the time axis): the batch moments over the valid steps
        only, weighted as Keras's ``_moments(inputs, mask)`` (sums over sum(mask) + 1e-7),
        every step normalised with them, the moving statistics updated from them."""
        L = self.layer
        c = self.in_shape[-1]
        rows = self._rows(keep.shape[0])
        per = rows // keep.size                       # rows per (sample, step)
        w = np.repeat(keep.reshape(-1), per).astype(np.float64)
        X = _flat(x).reshape(rows, c).astype(np.float64)
        den = w.sum() + 1e-7
        mean = (X * w[:, None]).sum(0) / den
        var = (np.square((X - mean) * w[:, None])).sum(0) / den
        mean32, var32 = mean.astype(np.float32), var.astype(np.float32)
        _core.batchnorm_infer_forward(rows, c, _flat(x), _flat(y), mean32, var32, gamma, beta,
                                      L.epsilon, self.buf["invstd"])
        self.buf["mean"][...] = mean32
        mom = np.float32(L.momentum)
        L.moving_mean[...] = L.moving_mean * mom + mean32 * (np.float32(1.0) - mom)
        L.moving_variance[...] = L.moving_variance * mom + var32 * (np.float32(1.0) - mom)
        self._valid = (w, den)
        self._x = x
        return y

    def _masked_backward(self, dy, dx, dgamma, dbeta):
        """The exact backward of _masked_train_forward: the moments depend on the valid
        rows only, the outputs of every row on the moments."""
        L = self.layer
        c = self.in_shape[-1]
        w, den = self._valid
        rows = w.shape[0]
        X = _flat(self._x).reshape(rows, c).astype(np.float64)
        D = np.asarray(dy, np.float64).reshape(rows, c)
        mean = self.buf["mean"].astype(np.float64)
        s = self.buf["invstd"].astype(np.float64)
        xc = X - mean
        if dgamma is not None:
            dgamma[...] = (D * xc * s).sum(0)
        if dbeta is not None:
            dbeta[...] = D.sum(0)
        if dx is None:
            return None
        G = D * L.gamma.astype(np.float64) if L.scale else D
        dmu = -s * G.sum(0)
        dvar = -0.5 * s ** 3 * (G * xc).sum(0)
        d = G * s + w[:, None] * (dmu + 2.0 * dvar * xc) / den
        _flat(dx)[...] = d.reshape(-1)
        return dx

    def backward(self, ctx, dy, need_dx):
        L = self.layer
        m = ctx.m
        c = self.in_shape[-1]
        dx = self.buf["dx"][:m] if need_dx else None
        dgamma = _grad(L, "gamma") if L.scale else None
        dbeta = _grad(L, "beta") if L.center else None
        if dx is None and dgamma is None and dbeta is None:
            return None
        if self._train and getattr(self, "_valid", None) is not None:
            return self._masked_backward(dy, dx, dgamma, dbeta)
        _core.batchnorm_backward(self._rows(m), c, _flat(np.ascontiguousarray(dy, np.float32)),
                                 _flat(self._x), self.buf["mean"], self.buf["invstd"],
                                 L.gamma if L.scale else None,
                                 None if dx is None else _flat(dx), dgamma, dbeta,
                                 self._train)
        return dx


class ConvBNStage(Stage):
    """Conv2D (linear) + BatchNormalization [+ relu] [+ Dropout | SpatialDropout2D].
    TRAIN: conv, BN on batch statistics, relu and mask as separate passes (exact
    backward through the batch statistics).  INFER / MC: BN folded into the convolution
    (kernel * gamma/sqrt(var+eps) per output channel, bias shifted), one implicit GEMM with
    the relu / mask epilogue: the BN pass over the activations disappears."""

    def __init__(self, conv, bn, relu=False, dropout=None, layers=None):
        super().__init__(layers or [conv, bn])
        self.conv, self.bn = conv, bn
        self.cs = ConvStage(conv, relu=False)
        self.bs = BatchNormStage(bn)
        self.relu = bool(relu)
        self.dropout = dropout if (dropout is not None and dropout.rate > 0) else None
        self.spatial = _kind(self.dropout) == "spatial_dropout2d"
        self.noisy = self.dropout is not None
        self._wired = None
        self._mask = self._chmask = None
        self._scale = 1.0
        self._fused_out = False

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.out_shape = self.cs.bind(in_shape)
        self.bs.bind(self.out_shape)
        self.geom = self.cs.geom
        return self.out_shape

    def buffers(self, capacity):
        oh, ow, oc = self.out_shape
        b = {"cv." + k: v for k, v in self.cs.buffers(capacity).items()}
        b.update({"bn." + k: v for k, v in self.bs.buffers(capacity).items()})
        k = int(np.prod(self.conv.kernel_size)) * self.in_shape[-1]
        b["out"] = ((capacity,) + self.out_shape, np.float32)
        b["dz"] = ((capacity,) + self.out_shape, np.float32)
        b["wf"] = ((k * oc,), np.float32)
        b["bf"] = ((oc,), np.float32)
        b["a"] = ((oc,), np.float32)
        if self.dropout is not None:
            bits = capacity * (oc if self.spatial else oh * ow * oc)
            b["mask"] = (((bits + 7) // 8,), np.uint8)
        return b

    def _wire(self):
        if self._wired is not self.buf:
            self.cs.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("cv.")}
            self.bs.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("bn.")}
            self._wired = self.buf

    def _masks(self, ctx):
        mask = chmask = None
        scale = 1.0
        if self.dropout is not None and ctx.noise:
            d = self.dropout
            oh, ow, oc = self.out_shape
            per = oc if self.spatial else oh * ow * oc
            bits = ctx.mask(self.buf["mask"], d.rate, per, _noise_index(d), d.seed)
            scale = d.scale
            if self.spatial:
                chmask = bits
            else:
                mask = bits
        self._mask, self._chmask, self._scale = mask, chmask, scale
        return mask, chmask, scale

    def forward(self, ctx, x):
        self._wire()
        m = ctx.m
        oh, ow, oc = self.out_shape
        mask, chmask, scale = self._masks(ctx)
        conv, bn = self.conv, self.bn
        y = self.buf["out"][:m]
        if not ctx.training:   # fold BN (moving statistics) into the convolution
            a, bf, wf = self.buf["a"], self.buf["bf"], self.buf["wf"]
            np.add(bn.moving_variance, np.float32(bn.epsilon), out=a)
            np.sqrt(a, out=a)
            if bn.scale:
                np.divide(bn.gamma, a, out=a)
            else:
                np.divide(np.float32(1), a, out=a)
            np.multiply(conv.kernel.reshape(-1, oc), a, out=wf.reshape(-1, oc))
            if conv.use_bias:
                np.subtract(conv.bias, bn.moving_mean, out=bf)
            else:
                np.negative(bn.moving_mean, out=bf)
            bf *= a
            if bn.center:
                bf += bn.beta
            _core.conv2d_forward((m,) + self.geom[1:], _flat(x), wf, _flat(y), bf, self.relu,
                                 mask, chmask, scale)
            return y
        z = self.cs.forward(ctx, x)
        u = self.bs.forward(ctx, z)
        if not self.relu and mask is None and chmask is None:
            self._fused_out = False
            return u
        self._fused_out = True
        uf, yf = _flat(u), _flat(y)
        if self.relu:
            _core.relu(uf, yf)
            uf = yf
        if mask is not None:
            _core.dropout_apply(uf, mask, yf, scale)
        elif chmask is not None:
            _core.channel_mask_apply(m, oh * ow, oc, uf, chmask, yf, scale)
        return y

    def backward(self, ctx, dy, need_dx):
        m = ctx.m
        oh, ow, oc = self.out_shape
        dy = np.ascontiguousarray(dy, np.float32).reshape((m,) + self.out_shape)
        if self._fused_out:
            dz = self.buf["dz"][:m]
            if self.relu or self._mask is not None:
                _core.conv_act_backward(_flat(dy), _flat(dz),
                                        _flat(self.buf["out"][:m]) if self.relu else None,
                                        self._mask, self._scale, self.relu)
            else:
                _core.channel_mask_apply(m, oh * ow, oc, _flat(dy), self._chmask, _flat(dz),
                                         self._scale)
            dy = dz
        du = self.bs.backward(ctx, dy, True)
        return self.cs.backward(ctx, du, need_dx)


class ConvPoolStage(Stage):
    """Conv2D [+ relu] + MaxPooling2D.  TRAIN: the ConvStage and the PoolStage (argmax
    for backward), unchanged.  INFER / MC (no noise inside): one kernel computes each
    image's conv output into an L2-resident buffer and max-pools it straight into the
    stage output (``_core.conv2d_infer``): the conv output never reaches memory and no
    argmax is written.  Outputs are bitwise those of the two stages."""

    def __init__(self, conv, pool, relu=False, layers=None):
        super().__init__(layers or [conv, pool])
        self.conv, self.pool = conv, pool
        self.relu = bool(relu)
        self.cs = ConvStage(conv, relu=relu, layers=self.layers[:-1])
        self.ps = PoolStage(pool)
        self._wired = None
        self._fused = False
        self._gm = None

    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self._gm = None
        self.ps.bind(self.cs.bind(in_shape))
        self.geom, self.pgeom = self.cs.geom, self.ps.geom
        self.out_shape = self.ps.out_shape
        return self.out_shape

    def buffers(self, capacity):
        b = {"cv." + k: v for k, v in self.cs.buffers(capacity).items()}
        b.update({"pl." + k: v for k, v in self.ps.buffers(capacity).items()})
        return b

    def _wire(self):
        if self._wired is not self.buf:
            self.cs.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("cv.")}
            self.ps.buf = {k[3:]: v for k, v in self.buf.items() if k.startswith("pl.")}
            self._wired = self.buf

    def forward(self, ctx, x):
        self._wire()
        m = ctx.m
        if not ctx.training:
            conv = self.conv
            g = self._gm
            if g is None or g[0] != m or g[3] is not self.buf:
                g = self._gm = (m, (m,) + self.geom[1:], (m,) + self.pgeom[1:], self.buf,
                                self.ps.buf["out"][:m], _flat(self.ps.buf["out"][:m]))
            if _core.conv2d_infer(g[1], g[2], _flat(x), _flat(conv.kernel), g[5],
                                  conv.bias if conv.use_bias else None, self.relu):
                self._fused = True
                return g[4]
        self._fused = False
        return self.ps.forward(ctx, self.cs.forward(ctx, x))

    def backward(self, ctx, dy, need_dx):
        if self._fused:
            raise RuntimeError("backward after an inference forward")
        d = self.ps.backward(ctx, dy, True)
        return self.cs.backward(ctx, d, need_dx)


@fusion_rule
def conv_pool_fusion_rule(layers, i):
    """Conv2D (relu or linear) [+ Activation('relu') if linear] + MaxPooling2D."""
    conv = layers[i]
    if _kind(conv) != "conv2d":
        return None
    own = _conv_act(conv)
    if not isinstance(own, str):
        return None
    relu = own == "relu"
    j = i + 1
    if not relu and j < len(layers) and _is_relu_activation(layers[j]):
        relu = True
        j += 1
    if j >= len(layers) or _kind(layers[j]) != "max_pooling2d":
        return None
    group = list(layers[i:j + 1])
    return (lambda: ConvPoolStage(conv, layers[j], relu, group)), j + 1 - i


def _is_relu_activation(layer):
    """An Activation layer that is a plain relu (not ReLU(max_value=...) etc.)."""
    if _kind(layer) != "activation":
        return False
    fn = _acts.get(*_acts.spec_of(layer))
    return fn is not None and fn.kernel == "relu"


def _conv_act(conv):
    """The conv's own activation: 'linear', 'relu' (fused) or an Act (run after it)."""
    fn = _acts.get(*_acts.spec_of(conv))
    if fn is None:
        return "linear"
    return "relu" if fn.kernel == "relu" else fn


def _is_plain_dropout(layer):
    return (_kind(layer) == "dropout" and getattr(layer, "noise_shape", None) is None
            and isinstance(getattr(layer, "rate", None), float))


@fusion_rule
def conv_fusion_rule(layers, i):
    """Conv2D [+ Activation('relu') if linear] [+ Dropout (element-wise) | SpatialDropout2D]."""
    conv = layers[i]
    if _kind(conv) != "conv2d":
        return None
    j = i + 1
    own = _conv_act(conv)
    if not isinstance(own, str):
        return (lambda: ConvStage(conv, act=own)), 1
    relu = own == "relu"
    if not relu and j < len(layers) and _is_relu_activation(layers[j]):
        relu = True
        j += 1
    drop = None
    if j < len(layers) and (_is_plain_dropout(layers[j]) or
                            _kind(layers[j]) == "spatial_dropout2d"):
        drop = layers[j]
        j += 1
    if j == i + 1:
        return None
    group = list(layers[i:j])
    return (lambda: ConvStage(conv, relu, drop, group)), j - i


@fusion_rule
def conv_bn_fusion_rule(layers, i):
    """Conv2D (linear) + BatchNormalization [+ Activation('relu')] [+ Dropout |
    SpatialDropout2D]: BN folded into the convolution at inference."""
    conv = layers[i]
    if _kind(conv) != "conv2d" or _conv_act(conv) != "linear" or i + 1 >= len(layers):
        return None
    bn = layers[i + 1]
    if _kind(bn) != "batchnorm":
        return None
    j = i + 2
    relu = False
    if j < len(layers) and _is_relu_activation(layers[j]):
        relu = True
        j += 1
    drop = None
    if j < len(layers) and (_is_plain_dropout(layers[j]) or
                            _kind(layers[j]) == "spatial_dropout2d"):
        drop = layers[j]
        j += 1
    group = list(layers[i:j])
    return (lambda: ConvBNStage(conv, bn, relu, drop, group)), j - i


"""ONNX export of a fastdrop ``Sequential`` model (``model.export(path, format='onnx')``).

    export_onnx(model, path, mc_dropout=False, opset=17)
    to_onnx(model, mc_dropout=False, opset=17) -> onnx.ModelProto

The graph has one input named ``"input"`` — float32 ``(batch, *per-sample shape)``, channels
last as the model's own ``predict``, or int64 token ids ``(batch, T)`` when the first layer
is an ``Embedding`` — and one output named ``"output"``: what ``model.predict`` returns
(class probabilities after a final softmax, which acts on the last axis as in Keras).  The
batch axis is dynamic (``"batch"``), and so is a free time axis (``"time"``).

Default export: deterministic (every dropout variant is the identity, BatchNormalization on
its moving statistics, folded into a preceding linear Conv2D / Dense).  ``mc_dropout=True``:
Monte Carlo dropout — each run of the exported model is one stochastic pass of
``predict(x, mc_samples=T)``: fresh masks on every run at onnxruntime's default optimization
level (see ``_onnx_graph``), with fastdrop's semantics in distribution: Dropout element-wise
or broadcast along ``noise_shape`` (a batch entry of 1: one mask shared by the batch),
SpatialDropout2D one draw per (sample, channel), GaussianDropout N(1, rate/(1-rate))
multiplicative noise, AlphaDropout Keras's affine formula, RNN dropout / recurrent_dropout
variational (masks drawn once per sequence before the time loop; per gate when
recurrent_dropout > 0), ``Dense(drop_connect=rate)`` one kernel mask per run shared by the
batch (fastdrop draws one per MC pass).  BatchNormalization stays on its moving statistics.
Draws come from onnxruntime's generator: a session repeats its sequence of masks from one
session to the next unless ``onnxruntime.set_seed`` is called with another seed.

Layers: Dense (Gemm; MatMul + Add on N-D inputs, acting on the last axis), Activation /
ReLU and every activation fastdrop has, Flatten, Reshape, Conv2D (NCHW inside the graph:
one transpose in, none before a Flatten + Dense — the Dense kernel rows are permuted
instead), Max/AveragePooling2D (Keras 'same' average pooling excludes the padding),
GlobalAverage/MaxPooling 1D/2D, BatchNormalization, Embedding (Gather; mask_zero gives a
sequence mask), SimpleRNN / LSTM / GRU / Bidirectional (ONNX's RNN ops, or a Scan where
they cannot express the layer: see ``_onnx_rnn``), Dropout, SpatialDropout2D,
GaussianDropout, AlphaDropout.  A layer without a translation is a NotImplementedError
naming it, raised before anything is written.

The ``onnx`` package is imported here only (``pip install "fastdrop-engine[onnx]"``).
"""
import numbers
import os

import numpy as np

INPUT_NAME = "input"
OUTPUT_NAME = "output"
MIN_OPSET = 17
_EXTRA = 'pip install "fastdrop-engine[onnx]"'
_NOISE_KINDS = ("dropout", "gaussian_dropout", "alpha_dropout", "spatial_dropout2d")


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs the 'onnx' package, which is not installed: "
                          f"{_EXTRA}") from e
    return onnx


def _check_args(model, mc_dropout, opset, onnx):
    if not hasattr(model, "layers") or not hasattr(model, "input_shape"):
        raise TypeError(f"model must be a fastdrop Sequential model, got {type(model).__name__}")
    if not getattr(model, "built", False):
        raise ValueError("the model is not built yet, so its input shape is unknown: start it "
                         "with Input(shape=...), or call build(), fit() or predict() before "
                         "exporting")
    if not isinstance(mc_dropout, (bool, np.bool_)):
        raise ValueError(f"mc_dropout must be True or False, got {mc_dropout!r}")
    top = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or \
            not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be an integer in [{MIN_OPSET}, {top}] (the onnx "
                         f"package installed knows opsets up to {top}), got {opset!r}")
    return bool(mc_dropout), int(opset)


def to_onnx(model, mc_dropout=False, opset=MIN_OPSET):
    """The ONNX ``ModelProto`` of ``model`` (checked by ``onnx.checker``)."""
    onnx = _import_onnx()
    mc, opset = _check_args(model, mc_dropout, opset, onnx)
    from . import _onnx_graph
    proto = _Exporter(model, mc, opset, _onnx_graph).build()
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path, mc_dropout=False, opset=MIN_OPSET):
    """Write ``model`` as an ONNX file at ``path`` (atomically: a temporary file renamed
    into place).  See the module docstring for the graph's inputs, outputs and noise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike), got "
                        f"{type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"path {path!r} is a directory; give a file name such as model.onnx")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {path!r}: directory {parent!r} does not exist")
    data = to_onnx(model, mc_dropout=mc_dropout, opset=opset).SerializeToString()
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


# ====================================================================== the exporter
def _bn_affine(bn):
    """(a, shift) of inference BatchNormalization: y = x * a + shift (float64)."""
    var = np.asarray(bn.moving_variance, np.float64)
    mean = np.asarray(bn.moving_mean, np.float64)
    a = 1.0 / np.sqrt(var + np.float64(np.float32(bn.epsilon)))
    if bn.scale:
        a = a * np.asarray(bn.gamma, np.float64)
    shift = -mean * a
    if bn.center:
        shift = shift + np.asarray(bn.beta, np.float64)
    return a, shift


def _chw_perm(chw):
    """perm[j] = the NHWC-flatten index of position j of a CHW-flatten."""
    c, h, w = chw
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def _pads(n, k, s, d, padding):
    """(before, after) padding of one spatial axis, as fastdrop and Keras pad."""
    if padding != "same":
        return 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def _dims(shape):
    return ["batch"] + [d if d is not None else ("time" if i == 0 else f"dim{i + 1}")
                        for i, d in enumerate(shape)]


class _Exporter:
    def __init__(self, model, mc, opset, G):
        self.model = model
        self.mc = mc
        self.G = G
        self.g = G.Graph(opset)
        self.int_input = False
        self.seq = None        # the (batch, T) bool sequence mask reaching the layer
        self.emb_seq = None

    # ------------------------------------------------------------------ driver
    def _layers(self):
        out = []
        for L in self.model.layers:
            kind = getattr(L, "kind", None)
            if kind == "input":
                continue
            if kind in _NOISE_KINDS and (not self.mc or L.rate <= 0):
                continue   # identity at inference (and a rate-0 noise layer always)
            if kind not in self._EMIT:
                raise NotImplementedError(
                    f"ONNX export: layer {L.name!r} ({type(L).__name__}) has no ONNX "
                    f"translation; supported layer kinds: {sorted(self._EMIT)}")
            out.append(L)
        return out

    def build(self):
        G, g, model = self.G, self.g, self.model
        layers = self._layers()
        in_shape = tuple(model.input_shape[1:])
        self.int_input = bool(model.layers) and getattr(model.layers[0], "kind", None) == \
            "embedding"
        t = G.Tensor(INPUT_NAME, in_shape)
        seq = None
        i = 0
        while i < len(layers):
            L = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            bn = nxt if (nxt is not None and nxt.kind == "batchnorm" and
                         L.kind in ("dense", "conv2d") and L.activation == "linear") else None
            self.seq = seq
            t_out = self._EMIT[L.kind](self, L, t, bn)
            seq = self._seq_after(L, seq, t.shape, t_out.shape)
            t = t_out
            i += 2 if bn is not None else 1
        t = g.nhwc(t)
        g.op("Identity", [t.name], [OUTPUT_NAME])
        out_shape = tuple(model.output_shape[1:])
        from .._version import __version__
        graph = G.helper.make_graph(
            g.nodes, (model.name or "sequential") + ("_mc" if self.mc else ""),
            [G.value_info(INPUT_NAME, G.INT64 if self.int_input else G.F32, _dims(in_shape))],
            [G.value_info(OUTPUT_NAME, G.F32, _dims(out_shape))], g.inits,
            doc_string=("fastdrop Sequential, Monte Carlo dropout: every run draws new masks"
                        if self.mc else "fastdrop Sequential, deterministic (inference)"))
        proto = G.helper.make_model(
            graph, opset_imports=[G.helper.make_opsetid("", g.opset)],
            ir_version=G.min_ir_version(g.opset), producer_name="fastdrop",
            producer_version=__version__)
        G.helper.set_model_props(proto, {"fastdrop.mc_dropout": str(self.mc).lower(),
                                         "fastdrop.layers": ",".join(
                                             type(L).__name__ for L in model.layers)})
        return proto

    def _seq_after(self, L, seq, in_shape, out_shape):
        """The sequence mask after layer L (fastdrop's rule: kept while the time axis is)."""
        if L.kind == "embedding":
            return self.emb_seq
        if seq is None or L.kind in ("global_average_pooling1d", "global_max_pooling1d"):
            return None
        if L.kind == "bidirectional":
            return seq if L.return_sequences else None
        if len(out_shape) < 2 or len(in_shape) < 1 or out_shape[0] != in_shape[0]:
            return None
        return seq

    def _out(self, L, name, layout="nhwc", chw=None):
        return self.G.Tensor(name, tuple(L.output_shape), layout, chw)

    # ------------------------------------------------------------------ core layers
    def _dense(self, L, t, bn):
        g = self.g
        W = np.asarray(L.kernel, np.float64)
        b = np.asarray(L.bias, np.float64) if L.use_bias else np.zeros(L.units)
        if bn is not None:
            a, shift = _bn_affine(bn)
            W, b = W * a, b * a + shift
        if t.chw is not None:
            W = W[_chw_perm(t.chw)]
        elif len(t.shape) > 1:
            t = g.nhwc(t)
        w = g.const(W, "kernel")
        if self.mc and L.drop_connect > 0:   # one kernel mask per run, shared by the batch
            w = g.op("Mul", [w, g.keep_mask(w, L.drop_connect)], name_hint="kernel_dc")
        bias = g.const(b, "bias")
        if len(t.shape) == 1:
            y = g.op("Gemm", [t.name, w, bias])
        else:
            y = g.op("Add", [g.op("MatMul", [t.name, w]), bias])
        if L.activation == "softmax":
            return self._out(L, g.activation("softmax", y))
        return self._out(L, g.activation(L.activation, y))

    def _activation(self, L, t, bn):
        if L.activation in ("softmax", "log_softmax", "sparsemax", "glu"):
            t = self.g.nhwc(t)      # the last axis is the channels (NHWC)
        return t.like(self.g.activation(L.activation, t.name,
                                        getattr(L, "activation_params", None)))

    def _flatten(self, L, t, bn):
        g = self.g
        if len(t.shape) == 1:
            return t
        if t.layout == "nchw":
            h, w, c = t.shape
            chw = (c, h, w) if (h * w > 1 and c > 1) else None
            return self._out(L, g.op("Flatten", [t.name], axis=1), chw=chw)
        return self._out(L, g.op("Flatten", [t.name], axis=1))

    def _reshape(self, L, t, bn):
        t = self.g.nhwc(t)
        return self._out(L, self.g.reshape(t.name, [0] + list(L.target_shape)))

    # ------------------------------------------------------------------ conv layers
    def _conv2d(self, L, t, bn):
        g = self.g
        t = g.nchw(t)
        W = np.asarray(L.kernel, np.float64).transpose(3, 2, 0, 1)   # (O, I, kh, kw)
        b = np.asarray(L.bias, np.float64) if L.use_bias else np.zeros(L.filters)
        if bn is not None:
            a, shift = _bn_affine(bn)
            W, b = W * a[:, None, None, None], b * a + shift
        h, w, _ = t.shape
        (kh, kw), (sh, sw), (dh, dw) = L.kernel_size, L.strides, L.dilation_rate
        pt, pb = _pads(h, kh, sh, dh, L.padding)
        pl, pr = _pads(w, kw, sw, dw, L.padding)
        y = g.op("Conv", [t.name, g.const(W, "conv_w"), g.const(b, "conv_b")],
                 kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                 pads=[pt, pl, pb, pr])
        if L.activation in ("softmax", "log_softmax", "sparsemax", "glu"):
            # over the channels: the last axis of NHWC
            yt = g.nhwc(self.G.Tensor(y, (1, 1, L.filters), "nchw", None))
            return self._out(L, g.activation(L.activation, yt.name))
        return self._out(L, g.activation(L.activation, y), "nchw")

    def _pool2d(self, L, t, bn):
        g = self.g
        t = g.nchw(t)
        h, w, _ = t.shape
        (ph, pw), (sh, sw) = L.pool_size, L.strides
        pt, pb = _pads(h, ph, sh, 1, L.padding)
        pl, pr = _pads(w, pw, sw, 1, L.padding)
        attrs = dict(kernel_shape=[ph, pw], strides=[sh, sw], pads=[pt, pl, pb, pr])
        if L.kind == "max_pooling2d":
            y = g.op("MaxPool", [t.name], **attrs)
        else:   # Keras's 'same' average excludes the padded cells
            y = g.op("AveragePool", [t.name], count_include_pad=0, **attrs)
        return self._out(L, y, "nchw")

    def _global_pool2d(self, L, t, bn):
        g = self.g
        is_max = L.kind == "global_max_pooling2d"
        if t.layout == "nchw":
            y = g.op("GlobalMaxPool" if is_max else "GlobalAveragePool", [t.name])
            if L.keepdims:
                return self._out(L, y, "nchw")
            return self._out(L, g.op("Flatten", [y], axis=1))
        y = g.reduce("ReduceMax" if is_max else "ReduceMean", t.name, [1, 2], L.keepdims)
        return self._out(L, y)

    def _batchnorm(self, L, t, bn):
        g = self.g
        a, shift = _bn_affine(L)
        if t.layout == "nchw":
            c = a.shape[0]
            gamma = np.asarray(L.gamma) if L.scale else np.ones(c)
            beta = np.asarray(L.beta) if L.center else np.zeros(c)
            y = g.op("BatchNormalization",
                     [t.name, g.const(gamma, "bn_gamma"), g.const(beta, "bn_beta"),
                      g.const(L.moving_mean, "bn_mean"), g.const(L.moving_variance, "bn_var")],
                     epsilon=float(np.float32(L.epsilon)))
            return t.like(y)
        if t.chw is not None:
            p = _chw_perm(t.chw)
            a, shift = a[p], shift[p]
        y = g.op("Add", [g.op("Mul", [t.name, g.const(a, "bn_a")]), g.const(shift, "bn_b")])
        return t.like(y)

    # ------------------------------------------------------------------ noise (MC)
    def _phys(self, t, logical):
        """A logical (batch, *sample) shape tuple in t's physical axis order."""
        if t.layout == "nchw":
            b, h, w, c = logical
            return (b, c, h, w)
        return logical

    def _dropout(self, L, t, bn):
        g = self.g
        if L.noise_shape is None:
            return t.like(g.dropout(t.name, L.rate))
        full = (None,) + tuple(t.shape)
        ns = tuple(L.noise_shape)
        return t.like(g.dropout(t.name, L.rate, self._phys(t, ns), self._phys(t, full)))

    def _spatial_dropout(self, L, t, bn):
        full = (None,) + tuple(t.shape)
        ns = (None, 1, 1, None)
        return t.like(self.g.dropout(t.name, L.rate, self._phys(t, ns), self._phys(t, full)))

    def _gaussian_dropout(self, L, t, bn):
        g = self.g
        n = g.op("RandomNormalLike", [t.name], dtype=self.G.F32, mean=1.0,
                 scale=float(L.stddev), name_hint="gauss")
        return t.like(g.op("Mul", [t.name, n]))

    def _alpha_dropout(self, L, t, bn):
        g = self.g
        a, b = L.affine
        u = g.op("RandomUniformLike", [t.name], dtype=self.G.F32, low=0.0, high=1.0,
                 name_hint="uniform")
        keep = g.op("GreaterOrEqual", [u, g.scalar(L.rate)])
        y = g.op("Where", [keep, t.name, g.scalar(L.ALPHA_P)])
        y = g.op("Add", [g.op("Mul", [y, g.scalar(a)]), g.scalar(b)])
        return t.like(y)

    # ------------------------------------------------------------------ sequences
    def _embedding(self, L, t, bn):
        g = self.g
        ids = t.name
        if not (self.int_input and t.name == INPUT_NAME):
            ids = g.op("Cast", [ids], to=self.G.INT64)
        y = g.op("Gather", [g.const(np.asarray(L.embeddings, np.float32), "embeddings"), ids],
                 axis=0)
        self.emb_seq = None
        if L.mask_zero:
            self.emb_seq = g.op("Not", [g.op("Equal", [ids, g.ints(0)])], name_hint="seq_mask")
        return self._out(L, y)

    def _rnn(self, L, t, bn):
        from ._onnx_rnn import emit_rnn
        return self._out(L, emit_rnn(self.g, L, t.name, self.seq, self.mc))

    def _bidirectional(self, L, t, bn):
        from ._onnx_rnn import emit_bidirectional
        return self._out(L, emit_bidirectional(self.g, L, t.name, self.seq, self.mc))

    def _gap1d(self, L, t, bn):
        g = self.g
        seq = self.seq
        if seq is None:
            return self._out(L, g.reduce("ReduceMean", t.name, [1], L.keepdims))
        w = g.op("Cast", [seq], to=self.G.F32)                          # (m, T)
        cnt = g.op("Max", [g.reduce("ReduceSum", w, [1], True), g.scalar(1.0)])
        s = g.reduce("ReduceSum", g.op("Mul", [t.name, g.unsqueeze(w, [2])]), [1], False)
        y = g.op("Div", [s, cnt])
        return self._out(L, g.unsqueeze(y, [1]) if L.keepdims else y)

    def _gmp1d(self, L, t, bn):
        return self._out(L, self.g.reduce("ReduceMax", t.name, [1], L.keepdims))

    _EMIT = {
        "dense": _dense, "activation": _activation, "flatten": _flatten, "reshape": _reshape,
        "conv2d": _conv2d, "max_pooling2d": _pool2d, "average_pooling2d": _pool2d,
        "global_average_pooling2d": _global_pool2d, "global_max_pooling2d": _global_pool2d,
        "batchnorm": _batchnorm, "dropout": _dropout, "spatial_dropout2d": _spatial_dropout,
        "gaussian_dropout": _gaussian_dropout, "alpha_dropout": _alpha_dropout,
        "embedding": _embedding, "simple_rnn": _rnn, "lstm": _rnn, "gru": _rnn,
        "bidirectional": _bidirectional, "global_average_pooling1d": _gap1d,
        "global_max_pooling1d": _gmp1d,
    }


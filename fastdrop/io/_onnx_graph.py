"""The graph builder behind ``fastdrop.io.onnx``: nodes, initializers, tensors with their
layout, activations and the run-time noise of the ``mc_dropout=True`` export.

Imported only by ``fastdrop.io.onnx`` once the ``onnx`` package is known to be installed.

Tensors (``Tensor``) carry the *logical* per-sample shape (Keras's: NHWC images, (T, F)
sequences) and how the values are laid out physically: ``layout='nchw'`` for images kept
channels-first between convolutions (ONNX ``Conv`` / pools are NCHW), ``chw`` for a flat
vector that a ``Flatten`` of an NCHW image left in (C, H, W) order (the next ``Dense``
permutes its kernel rows instead of transposing the activations).  ``nhwc()`` restores the
logical layout wherever it matters (Reshape, Dense on images, the graph output).

Noise (``mc_dropout=True``): masks are built from ``RandomUniformLike`` + ``GreaterOrEqual``
+ ``Cast`` + ``Mul``, Gaussian noise from ``RandomNormalLike``: onnxruntime's default graph
optimizer keeps these and draws them anew on every run (a ``Dropout`` node with
``training_mode=True`` is removed by its dropout elimination).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL
INT64_MAX = np.iinfo(np.int64).max


class Tensor:
    """A value of the graph: ``name``, logical per-sample ``shape`` (None = dynamic),
    ``layout`` ('nhwc' | 'nchw'), ``chw`` (C, H, W) for a flat vector in CHW order."""

    __slots__ = ("name", "shape", "layout", "chw")

    def __init__(self, name, shape, layout="nhwc", chw=None):
        self.name = name
        self.shape = tuple(shape)
        self.layout = layout
        self.chw = chw

    def like(self, name, shape=None):
        return Tensor(name, self.shape if shape is None else shape, self.layout, self.chw)


class Graph:
    """Collects nodes and initializers; ``op`` returns the output name(s)."""

    def __init__(self, opset):
        self.opset = int(opset)
        self.parent = None
        self.nodes = []
        self.inits = []
        self._n = 0
        self._consts = {}

    def fresh(self, hint="t"):
        if self.parent is not None:
            return self.parent.fresh(hint)
        self._n += 1
        return f"{hint}_{self._n}"

    def sub(self):
        """A graph for a subgraph body (Scan): own nodes; names, constants and
        initializers shared with this graph (the body reads them from the outer scope)."""
        g = Graph(self.opset)
        g.parent = self
        g.inits = self.inits
        g._consts = self._consts
        return g

    def op(self, op_type, inputs, outputs=1, name_hint=None, **attrs):
        hint = name_hint or op_type.lower()
        if isinstance(outputs, int):
            outs = [self.fresh(hint) for _ in range(outputs)]
        else:
            outs = list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, hint="c", dtype=np.float32):
        """An initializer holding ``value`` (float32 unless dtype says otherwise);
        small constants are shared."""
        arr = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        key = None
        if arr.size <= 8:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values):
        return self.const(np.asarray(values, np.int64), "i", np.int64)

    def scalar(self, v):
        return self.const(np.float32(v), "s")

    # ---------------------------------------------------------------- shape helpers
    def reduce(self, op_type, x, axes, keepdims):
        """ReduceMean/Max/Sum over ``axes`` (attribute before opset 18, input after;
        ReduceSum took its axes as an input from opset 13)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def slice(self, x, starts, ends, axes, steps=None):
        ins = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            ins.append(self.ints(steps))
        return self.op("Slice", ins)

    def reverse_axis(self, x, axis):
        """x reversed along ``axis`` (any length, dynamic included)."""
        return self.slice(x, [-1], [-INT64_MAX], [axis], [-1])

    def transpose(self, x, perm):
        return self.op("Transpose", [x], perm=list(perm))

    def reshape(self, x, shape):
        return self.op("Reshape", [x, self.ints(shape)])

    def unsqueeze(self, x, axes):
        return self.op("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x, axes):
        return self.op("Squeeze", [x, self.ints(axes)])

    def batch_dim(self, x):
        """A 1-element int64 tensor: the batch size of x."""
        return self.op("Shape", [x], start=0, end=1)

    def zeros_like_rows(self, x, width):
        """float32 zeros (batch of x, width)."""
        shape = self.op("Concat", [self.batch_dim(x), self.ints([width])], axis=0)
        return self.op("ConstantOfShape", [shape],
                       value=numpy_helper.from_array(np.zeros(1, np.float32)))

    # ---------------------------------------------------------------- layouts
    def nhwc(self, t):
        """t in its logical layout (a transpose where it was kept NCHW / CHW)."""
        if t.layout == "nchw":
            return Tensor(self.transpose(t.name, (0, 2, 3, 1)), t.shape)
        if t.chw is not None:
            c, h, w = t.chw
            y = self.reshape(t.name, [0, c, h, w])
            y = self.transpose(y, (0, 2, 3, 1))
            return Tensor(self.op("Flatten", [y], axis=1), t.shape)
        return t

    def nchw(self, t):
        """An image tensor laid out NCHW (for Conv and the pools)."""
        if t.layout == "nchw":
            return t
        t = self.nhwc(t)
        return Tensor(self.transpose(t.name, (0, 3, 1, 2)), t.shape, "nchw")

    # ---------------------------------------------------------------- noise
    def keep_mask(self, like, rate, count=1):
        """``count`` independent float masks shaped like the tensor ``like``: 1/(1-rate)
        with probability 1-rate, else 0 — drawn anew on every run."""
        scale = self.scalar(np.float32(1.0 / (1.0 - rate)))
        r = self.scalar(rate)
        out = []
        for _ in range(count):
            u = self.op("RandomUniformLike", [like], dtype=F32, low=0.0, high=1.0,
                        name_hint="uniform")
            keep = self.op("GreaterOrEqual", [u, r], name_hint="keep")
            out.append(self.op("Mul", [self.op("Cast", [keep], to=F32), scale],
                               name_hint="mask"))
        return out if count > 1 else out[0]

    def mask_source(self, x, phys_mask_shape, full):
        """A tensor with the physical shape of a mask broadcast over x: x itself when
        the mask is element-wise, else x sliced to length 1 on the broadcast axes
        (``phys_mask_shape`` entries: None/full = keep the axis, 1 = broadcast)."""
        axes = [i for i, (d, f) in enumerate(zip(phys_mask_shape, full))
                if d == 1 and f != 1]
        if not axes:
            return x
        return self.slice(x, [0] * len(axes), [1] * len(axes), axes)

    def dropout(self, x, rate, phys_mask_shape=None, full=None):
        """Inverted dropout of x (mask broadcast per ``phys_mask_shape``)."""
        src = x if phys_mask_shape is None else self.mask_source(x, phys_mask_shape, full)
        return self.op("Mul", [x, self.keep_mask(src, rate)], name_hint="dropped")

    # ---------------------------------------------------------------- activations
    def activation(self, name, x, params=None):
        """The activation ``name`` with its Keras arguments (fastdrop / Keras 3
        definitions) applied to x (row-wise ones on the last axis)."""
        if name in (None, "linear"):
            return x
        from ..engine import activations as _acts
        fn = _acts.get(name, params)
        if fn is None:
            return x
        k, p = fn.kernel, fn.kparams
        if k == "elu" and p[0] != 1.0:
            return self.op("Elu", [x], alpha=float(p[0]))
        if k == "leaky_relu":
            return self.op("LeakyRelu", [x], alpha=float(p[0]))
        if k == "celu":
            return self.op("Celu", [x], alpha=float(p[0]))
        if k == "hard_silu":
            return self.op("HardSwish", [x])
        if k == "hard_tanh":
            return self.op("Clip", [x, self.scalar(-1.0), self.scalar(1.0)])
        if k == "exponential":
            return self.op("Exp", [x])
        if k == "tanh_shrink":
            return self.op("Sub", [x, self.op("Tanh", [x])])
        if k == "log_sigmoid":
            return self.op("Neg", [self.op("Softplus", [self.op("Neg", [x])])])
        if k == "soft_shrink":
            return self.op("Shrink", [x], lambd=float(p[0]), bias=float(p[0]))
        if k == "hard_shrink":
            return self.op("Shrink", [x], lambd=float(p[0]), bias=0.0)
        if k == "squareplus":
            s = self.op("Sqrt", [self.op("Add", [self.op("Mul", [x, x]), self.scalar(p[0])])])
            return self.op("Mul", [self.op("Add", [x, s]), self.scalar(0.5)])
        if k == "log_softmax":
            return self.op("LogSoftmax", [x], axis=-1)
        if k == "relu_args":
            raise NotImplementedError(f"ONNX export: relu with arguments {fn.params} has no "
                                      "ONNX translation yet")
        name = k
        simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
                  "softsign": "Softsign", "softplus": "Softplus"}
        if name in simple:
            return self.op(simple[name], [x])
        if name == "elu":
            return self.op("Elu", [x], alpha=1.0)
        if name == "selu":   # Keras's constants (also ONNX's float32 defaults)
            return self.op("Selu", [x], alpha=1.6732632423543772, gamma=1.0507009873554805)
        if name == "leaky_relu":   # Keras 3 negative_slope default (fastdrop's too)
            return self.op("LeakyRelu", [x], alpha=0.2)
        if name == "relu6":
            return self.op("Clip", [x, self.scalar(0.0), self.scalar(6.0)])
        if name == "hard_sigmoid":   # Keras 3: relu6(x + 3) / 6
            return self.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
        if name in ("silu", "swish"):
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        if name == "gelu":   # exact (erf) form, Keras's approximate=False
            e = self.op("Erf", [self.op("Mul", [x, self.scalar(1.0 / np.sqrt(2.0))])])
            half = self.op("Mul", [x, self.scalar(0.5)])
            return self.op("Mul", [half, self.op("Add", [e, self.scalar(1.0)])])
        if name == "gelu_tanh":   # Keras's approximate=True
            x3 = self.op("Mul", [self.op("Mul", [x, x]), x])
            inner = self.op("Add", [x, self.op("Mul", [x3, self.scalar(0.044715)])])
            t = self.op("Tanh", [self.op("Mul", [inner, self.scalar(np.sqrt(2.0 / np.pi))])])
            half = self.op("Mul", [x, self.scalar(0.5)])
            return self.op("Mul", [half, self.op("Add", [t, self.scalar(1.0)])])
        if name == "mish":
            return self.op("Mul", [x, self.op("Tanh", [self.op("Softplus", [x])])])
        if name == "softmax":
            return self.op("Softmax", [x], axis=-1)
        raise NotImplementedError(f"ONNX export: activation {name!r} has no ONNX translation")


def value_info(name, elem_type, dims):
    return helper.make_tensor_value_info(name, elem_type, list(dims))


def min_ir_version(opset):
    """The oldest IR version that carries ``opset`` (newer runtimes read it; older
    onnxruntime builds refuse IR versions they do not know)."""
    try:
        return max(3, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    except Exception:   # a very new opset the table does not list yet
        return onnx.IR_VERSION

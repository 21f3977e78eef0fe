"""The baselines fastdrop is measured against, each imported only when a case uses it:
NumPy (``numpy.matmul(out=)``, ``np.copyto`` as memcpy, the float32 one-liners a user would
write, the NumPy ``ReferenceTrainer``), PyTorch (CPU), onnxruntime (running fastdrop's own
ONNX export) and Keras 3.  None is a dependency of fastdrop: without the library, the
function returning its callables is never reached (``torch(cfg)`` is None) or its pytest
file skips (``pytest.importorskip``)."""
import numpy as np

# ------------------------------------------------------------------------- NumPy


def numpy_gemm(a, b, out, trans_a=False, trans_b=False):
    """``numpy.matmul(op(a), op(b), out=out)`` with a, b stored as fastdrop takes them."""
    na = a.T if trans_a else a
    nb = b.T if trans_b else b
    return lambda: np.matmul(na, nb, out=out)


def memcpy(dst, src):
    """``np.copyto`` (one thread): the memory bandwidth baseline."""
    return lambda: np.copyto(dst, src)


def numpy32_activation(name):
    """A plain float32 NumPy version of activation ``name`` (what a user would write), or
    None (NumPy has no float32 erf for gelu)."""
    f = np.float32
    return {
        "linear": lambda x: x.copy(),
        "relu": lambda x: np.maximum(x, f(0)),
        "relu6": lambda x: np.minimum(np.maximum(x, f(0)), f(6)),
        "leaky_relu": lambda x: np.where(x > 0, x, f(0.2) * x),
        "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
        "tanh": np.tanh,
        "sigmoid": lambda x: f(1) / (f(1) + np.exp(-x)),
        "softplus": lambda x: np.logaddexp(f(0), x),
        "silu": lambda x: x / (f(1) + np.exp(-x)),
        "gelu": None,
        "gelu_tanh": lambda x: f(0.5) * x * (f(1) + np.tanh(f(0.7978846) *
                                                          (x + f(0.044715) * x * x * x))),
        "hard_sigmoid": lambda x: np.clip(x + f(3), f(0), f(6)) / f(6),
        "softsign": lambda x: x / (f(1) + np.abs(x)),
        "mish": lambda x: x * np.tanh(np.logaddexp(f(0), x)),
        "celu": lambda x: np.where(x > 0, x, np.expm1(x)),
        "hard_silu": lambda x: x * np.clip(x + f(3), f(0), f(6)) / f(6),
        "hard_tanh": lambda x: np.clip(x, f(-1), f(1)),
        "soft_shrink": lambda x: np.where(x > f(0.5), x - f(0.5),
                                          np.where(x < f(-0.5), x + f(0.5), f(0))),
        "hard_shrink": lambda x: np.where(np.abs(x) > f(0.5), x, f(0)),
        "tanh_shrink": lambda x: x - np.tanh(x),
        "log_sigmoid": lambda x: -np.logaddexp(f(0), -x),
        "exponential": np.exp,
        "sparse_plus": lambda x: np.where(x <= f(-1), f(0),
                                          np.where(x >= f(1), x, (x + f(1)) ** 2 / f(4))),
        "squareplus": lambda x: (x + np.sqrt(x * x + f(4))) / f(2),
        "threshold": lambda x: np.where(x > f(0), x, f(0)),
        "relu_args": lambda x: np.maximum(x, f(0)),
        "sparse_sigmoid": lambda x: np.clip((x + f(1)) / f(2), f(0), f(1)),
        "selu": lambda x: f(1.0507010) * np.where(x > 0, x, f(1.6732632) * np.expm1(x)),
    }.get(name)


def reference_trainer(sizes, x, y, batch, rate, steps=None, seed=0):
    """``fastdrop.reference.ReferenceTrainer`` on the first ``steps`` batches of (x, y).
    Returns (callable, steps per call, trainer)."""
    from ..reference import ReferenceTrainer
    steps = min(x.shape[0] // batch, steps or x.shape[0] // batch)
    ref = ReferenceTrainer(list(sizes), rate=rate, learning_rate=1e-3, seed=seed)

    def rf():
        for lo in range(0, steps * batch, batch):
            ref.train_step(x[lo:lo + batch], y[lo:lo + batch])

    return rf, steps, ref


# ------------------------------------------------------------------------- PyTorch

_TORCH = []


def torch(cfg=None):
    """torch if wanted (``cfg["torch"]``, or always when ``cfg`` is None) and importable,
    else None (imported once, late: it brings its own OpenMP runtime)."""
    if cfg is not None and not cfg.get("torch"):
        return None
    if not _TORCH:
        try:
            import torch as _t
            _TORCH.append(_t)
        except Exception:
            _TORCH.append(None)
    return _TORCH[0]


def torch_if_imported():
    """torch if ``torch()`` imported it already, else None (never imports)."""
    return _TORCH[0] if _TORCH else None


def torch_dropout(torch, x, rate):
    """(forward, backward) callables: ``F.dropout`` and ``native_dropout_backward``."""
    if torch is None:
        return None, None
    xt = torch.from_numpy(x)
    F = torch.nn.functional
    _, mask = torch.native_dropout(xt, rate, True)
    scale = 1.0 / (1.0 - rate)
    fwd = lambda: F.dropout(xt, rate, True)  # noqa: E731
    bwd = lambda: torch.ops.aten.native_dropout_backward(xt, mask, scale)  # noqa: E731
    return fwd, bwd


def torch_activations(torch):
    """{activation name: torch function} for the names of fastdrop.reference.activations
    that torch has (sparse_plus and sparse_sigmoid have no torch op)."""
    F = torch.nn.functional
    return {
        "linear": lambda t: t.clone(), "relu": torch.relu, "relu6": F.relu6,
        "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "elu": F.elu, "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "softplus": F.softplus, "silu": F.silu,
        "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "hard_sigmoid": F.hardsigmoid, "softsign": F.softsign, "mish": F.mish,
        "celu": F.celu, "hard_silu": F.hardswish, "hard_tanh": F.hardtanh,
        "soft_shrink": F.softshrink, "hard_shrink": F.hardshrink,
        "tanh_shrink": F.tanhshrink, "log_sigmoid": F.logsigmoid,
        "exponential": torch.exp, "squareplus": lambda t: (t + torch.sqrt(t * t + 4)) / 2,
        "threshold": lambda t: F.threshold(t, 0.0, 0.0), "relu_args": torch.relu,
        "selu": F.selu,
    }


def torch_mlp(torch, sizes, rate, seed=0):
    """nn.Sequential of Linear/ReLU/Dropout (no Dropout when ``rate`` is 0 or None) and
    Adam (eps=1e-7): fastdrop's MLP."""
    nn = torch.nn
    torch.manual_seed(seed)
    layers = []
    for fi, fo in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(fi, fo), nn.ReLU()] + ([nn.Dropout(rate)] if rate else [])
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    return model, opt


def torch_mlp_trainer(torch, sizes, x, y, batch, rate, seed=0, warmup=True, autocast=False):
    """The MLP in PyTorch (cross-entropy, Adam with eps=1e-7) over ``len(x) // batch``
    steps; one warm-up call made if ``warmup``.  ``autocast``: the forward pass and the
    loss under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (PyTorch's bf16 mixed
    precision: fp32 parameters, bf16 matmuls; backward and Adam outside it, as PyTorch
    recommends).  Returns (callable, steps per call, module)."""
    steps = x.shape[0] // batch
    tm, opt = torch_mlp(torch, sizes, rate, seed)
    tm.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    F = torch.nn.functional

    def tr():
        for lo in range(0, steps * batch, batch):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tm(xt[lo:lo + batch]), yt[lo:lo + batch])
            loss.backward()
            opt.step()

    def tr_autocast():
        for lo in range(0, steps * batch, batch):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(tm(xt[lo:lo + batch]), yt[lo:lo + batch])
            loss.backward()
            opt.step()

    run = tr_autocast if autocast else tr
    if warmup:
        run()
    return run, steps, tm


def torch_predict(torch, module, x):
    """softmax(module(x)) under eval + inference_mode."""
    module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    sm = torch.nn.functional.softmax

    def tp():
        with torch.inference_mode():
            return sm(module(xt), dim=1)
    return tp


def torch_net(torch, name):
    """The PyTorch twin of a model-level case: 'seed003', 'mnist_convnet', 'lstm', 'gru'."""
    nn = torch.nn
    if name == "seed003":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
                             nn.Flatten(), nn.Linear(32 * 13 * 13, 128), nn.ReLU(),
                             nn.Dropout(0.5), nn.Linear(128, 10))
    if name == "mnist_convnet":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(0.5), nn.Linear(1600, 10))

    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (nn.LSTM if name == "lstm" else nn.GRU)(28, 128, batch_first=True)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])
    return R()


def torch_net_trainer(torch, name, x, y, batch, channels_last=False):
    """One epoch of Adam on (x, y) for ``torch_net(name)``; NHWC images are transposed to
    NCHW (and to channels-last memory if asked).  Returns (callable, module, inputs)."""
    net = torch_net(torch, name)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    conv = name in ("seed003", "mnist_convnet")
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if conv else x)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(y)
    net.train()

    def run():
        for i in range(0, len(xt), batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[i:i + batch]), yt[i:i + batch])
            loss.backward()
            opt.step()
    return run, net, xt


def torch_conv_step(torch, kernel, filters, x, dy, need_dx, layout="nchw"):
    """relu(conv2d) forward + backward of one layer with fastdrop's HWIO ``kernel`` on
    NHWC ``x`` (NCHW or channels-last memory)."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    xt.requires_grad_(need_dx)
    wt = torch.tensor(kernel).permute(3, 2, 0, 1).contiguous(memory_format=fmt)
    wt.requires_grad_(True)
    bt = torch.zeros(filters, requires_grad=True)
    gy = torch.tensor(dy).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

    def step():
        y = torch.relu(torch.nn.functional.conv2d(xt, wt, bt))
        y.backward(gy)
    return step


def torch_rnn_step(torch, cell, features, units, x):
    """nn.LSTM / nn.GRU forward + backward of the last step's sum."""
    torch.manual_seed(0)
    mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(features, units,
                                                              batch_first=True)
    xt = torch.from_numpy(x)

    def run():
        mod.zero_grad(set_to_none=False)
        out, _ = mod(xt)
        out[:, -1].sum().backward()
    return run


# -------------------------------------------------------------------- onnxruntime


def ort_session(model, mc_dropout, threads):
    """An onnxruntime session on fastdrop's export of ``model``: ``threads`` intra-op
    threads, one inter-op, no spinning workers, default graph optimisation."""
    import onnxruntime as ort

    from ..io.onnx import to_onnx
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(to_onnx(model, mc_dropout=mc_dropout).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- Keras


def keras_model(name):
    """A Keras 3 model: "mlp" 784-512-512-10 with Dropout(0.5) after each hidden layer, or
    "cnn" (Conv2D 32 + BatchNormalization + SpatialDropout2D(0.2), MaxPool, Conv2D 64,
    MaxPool, Flatten, Dropout(0.5), Dense 10) on 28×28×1."""
    import keras
    L = keras.layers
    if name == "mlp":
        return keras.Sequential([keras.Input((784,)), L.Dense(512, activation="relu"),
                                 L.Dropout(0.5), L.Dense(512, activation="relu"),
                                 L.Dropout(0.5), L.Dense(10, activation="softmax")])
    return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(32, 3),
                             L.BatchNormalization(), L.Activation("relu"),
                             L.SpatialDropout2D(0.2), L.MaxPooling2D(2),
                             L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                             L.Flatten(), L.Dropout(0.5), L.Dense(10, activation="softmax")])


def keras_mc(keras_model, xt, T):
    """Keras's own MC dropout loop: mean and std of T ``model(x, training=True)`` calls
    (torch backend; ``xt`` a torch tensor)."""
    import torch as _t
    with _t.no_grad():
        outs = [keras_model(xt, training=True) for _ in range(T)]
    s = _t.stack(outs)
    return s.mean(0), s.std(0)

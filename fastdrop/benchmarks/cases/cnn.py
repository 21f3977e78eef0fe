"""Convolutional networks: one conv layer's forward + backward (its stage) beside the
NumPy reference and PyTorch (NCHW and channels-last); model-level training of the seed
003 CNN and Keras's mnist_convnet beside PyTorch; batch-1 predict latency; Monte Carlo
dropout against T plain predictions; predict and MC against onnxruntime running
fastdrop's own ONNX export."""
import numpy as np

from .. import peers
from .common import bound_stage, train_row, train_sides

#: layer-level cases (batch 128, 3×3 kernels, ReLU): the seed 003 CNN's first conv (no dx:
#: small-K direct kernels) and mnist_convnet's second conv (implicit GEMM, dx computed)
CONV_LAYERS = {
    "seed003-conv": dict(in_shape=(28, 28, 1), filters=32, need_dx=False),
    "convnet-conv2": dict(in_shape=(13, 13, 32), filters=64, need_dx=True),
}


def seed003(seed=0):
    from ... import layers as L
    from ...models import Sequential
    return Sequential([L.Input((28, 28, 1)), L.Conv2D(32, (3, 3), activation="relu"),
                       L.MaxPooling2D((2, 2)), L.Dropout(0.25), L.Flatten(),
                       L.Dense(128, activation="relu"), L.Dropout(0.5),
                       L.Dense(10, activation="softmax")], seed=seed)


def mnist_convnet(seed=0):
    """Keras's mnist_convnet: Conv2D(32, 3, relu) - MaxPool 2 - Conv2D(64, 3, relu) -
    MaxPool 2 - Flatten - Dropout(0.5) - Dense(10, softmax) on 28×28×1."""
    from ... import layers as L
    from ...models import Sequential
    return Sequential([L.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"),
                       L.MaxPooling2D(2), L.Conv2D(64, 3, activation="relu"),
                       L.MaxPooling2D(2), L.Flatten(), L.Dropout(0.5),
                       L.Dense(10, activation="softmax")], seed=seed)


MODELS = {"seed003": seed003, "mnist_convnet": mnist_convnet}


def conv_flops(case, n):
    """2·M·K·oc per GEMM-equivalent pass (3 passes with dx, 2 without)."""
    h, w, c = case["in_shape"]
    oh, ow = h - 2, w - 2
    passes = 3 if case["need_dx"] else 2
    return passes * 2 * n * oh * ow * 9 * c * case["filters"]


def conv_layer(case, batch, rng):
    """(layer, stage, x, dy) of a ``CONV_LAYERS`` case bound for ``batch`` rows."""
    from ...layers.conv import Conv2D
    layer, stage = bound_stage(Conv2D(case["filters"], 3, activation="relu"),
                               case["in_shape"], batch, rng)
    x = rng.standard_normal((batch,) + case["in_shape"]).astype(np.float32)
    dy = rng.standard_normal((batch,) + stage.out_shape).astype(np.float32)
    return layer, stage, x, dy


def conv_sides(case, layer, stage, x, dy, ref_batch=8, torch=None):
    """{"fastdrop": stage forward + backward, "reference": the NumPy reference on the first
    ``ref_batch`` rows, "torch" / "torch_cl": PyTorch in NCHW / channels-last}."""
    from ...engine import TRAIN, Context
    from ...reference import conv as R
    ctx = Context(TRAIN, x.shape[0])
    need_dx = case["need_dx"]

    def step():
        stage.forward(ctx, x)
        stage.backward(ctx, dy, need_dx)

    xs, dys = x[:ref_batch], dy[:ref_batch]
    w, b = layer.kernel, layer.bias

    def ref():
        z = R.conv2d(xs, w, b, dtype=np.float32)
        R.conv2d_backward(xs, w, np.where(z > 0, dys, 0), dtype=np.float32)

    sides = {"fastdrop": step, "reference": ref, "torch": None, "torch_cl": None}
    if torch is not None:
        for key, layout in (("torch", "nchw"), ("torch_cl", "channels_last")):
            sides[key] = peers.torch_conv_step(torch, layer.kernel, case["filters"], x, dy,
                                               need_dx, layout)
    return sides


def images(n, rng):
    return rng.random((n, 28, 28, 1), dtype=np.float32)


def predict_sides(model, x, torch=None):
    """{"fastdrop": predict, "torch": the PyTorch twin of mnist_convnet (eval)}."""
    cases = {"fastdrop": lambda: model.predict(x)}
    if torch is not None:
        net = peers.torch_net(torch, "mnist_convnet").eval()
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

        def tp():
            with torch.inference_mode():
                return torch.softmax(net(xt), 1)
        cases["torch"] = tp
    return cases


def onnx_sides(model, x, T, threads):
    """{"predict": (fastdrop, onnxruntime), "mc": (fastdrop MC, T onnxruntime runs of the
    MC export, one run on the batch tiled T times)} on the same inputs; mean and std of the
    MC passes in NumPy."""
    det = peers.ort_session(model, False, threads)
    mc = peers.ort_session(model, True, threads)

    def ort_mc():
        ys = np.stack([mc.run(None, {"input": x})[0] for _ in range(T)])
        return ys.mean(0), ys.std(0)

    def ort_mc_tiled():
        ys = mc.run(None, {"input": np.tile(x, (T, 1, 1, 1))})[0].reshape((T,) + (len(x), -1))
        return ys.mean(0), ys.std(0)

    return {"predict": (lambda: model.predict(x), lambda: det.run(None, {"input": x})[0]),
            "mc": (lambda: model.predict(x, mc_samples=T), ort_mc, ort_mc_tiled)}


def bench(ctx):
    """Training samples/s of seed003 and mnist_convnet beside PyTorch (NCHW and
    channels-last, the better one counts); ``cfg["model_steps"]`` batches an epoch."""
    cfg = ctx.cfg
    batch = cfg["batch"]
    n = cfg.get("model_steps", 4) * batch
    img = images(n, ctx.rng)
    y = ctx.rng.integers(0, 10, n).astype(np.int64)
    ctx.threads(ctx.n)
    torch = ctx.torch()
    return [train_row(ctx, name, train_sides(name, make(), img, y, batch, torch,
                                             channels_last=True), n)
            for name, make in MODELS.items()]


def bench_inference(ctx):
    """Batch-1 predict of mnist_convnet beside PyTorch, and MC dropout T=30 on
    ``cfg["mc_images"]`` images against 30 predict calls."""
    from .mlp import mc_sides
    cfg = ctx.cfg
    ctx.threads(ctx.n)
    model = mnist_convnet()
    x1 = images(1, ctx.rng)
    r = ctx.measure(predict_sides(model, x1, ctx.torch()), scale=0.5)
    rows = [dict(case="predict batch 1 mnist_convnet", fastdrop_us=r["fastdrop"]["best"] * 1e6,
                 torch_us=r["torch"]["best"] * 1e6 if "torch" in r else None)]
    T = 30
    r = ctx.measure(mc_sides(model, images(cfg.get("mc_images", 1000), ctx.rng), T),
                    scale=1.0)
    rows.append(dict(case=f"MC dropout T={T} mnist_convnet / {T} predicts",
                     ratio=r["mc"]["best"] / r["predicts"]["best"]))
    ctx.log(f"MC T={T}: {rows[-1]['ratio']:.2f}x of {T} predicts")
    return rows

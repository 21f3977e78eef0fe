"""Compare fastdrop's losses (values, gradients, weights, label smoothing, logits and
probabilities) and activations with Keras 3 on the torch backend.  Not a test (needs
keras + torch): PYTHONPATH=. python bench/keras_compare_act_losses.py"""
import os
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, keras, torch
from fastdrop import losses as L, _core
torch.set_num_threads(1)
rng = np.random.default_rng(0)
m, c = 64, 5
z = (rng.standard_normal((m, c)) * 3).astype(np.float32)
w = rng.uniform(0, 3, m).astype(np.float32)
def kval(kl, yt, yp, sw=None):
    return float(kl(yt, yp, sample_weight=sw))
def sig(x): return (1/(1+np.exp(-x.astype(np.float64)))).astype(np.float32)
def softmax(x):
    e = np.exp(x - x.max(1, keepdims=True)); return (e/e.sum(1, keepdims=True)).astype(np.float32)
def kgrad(kl, yt, yp, sw=None):
    t = torch.tensor(yp, requires_grad=True)
    v = kl(torch.tensor(yt), t, sample_weight=None if sw is None else torch.tensor(sw))
    v.backward(); return t.grad.numpy()
rows = []
def cmp(label, fl, kl, yt, xin, sw, probs=False):
    g = np.empty_like(xin)
    f = (fl.forward_backward_probs if probs else fl.forward_backward)(xin, yt, g, sw) / xin.shape[0]
    k = kval(kl, yt, xin, sw)
    kg = kgrad(kl, yt, xin, sw)
    print(f"{label:55s} fastdrop {f:.7f} keras {k:.7f} rel {abs(f-k)/abs(k):.1e}  grad maxabs diff {np.abs(g-kg).max():.1e} (max |g| {np.abs(kg).max():.1e})")
t01 = (rng.random((m, c)) < 0.5).astype(np.float32)
y = rng.integers(0, c, m)
oh = np.eye(c, dtype=np.float32)[y]
for sw in (None, w):
    tag = " weighted" if sw is not None else ""
    for ls in (0.0, 0.1):
        cmp(f"BCE from_logits=True ls={ls}{tag}", L.BinaryCrossentropy(from_logits=True, label_smoothing=ls), keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=ls), t01, z, sw)
        cmp(f"BCE probs (sigmoid output) ls={ls}{tag}", L.BinaryCrossentropy(label_smoothing=ls), keras.losses.BinaryCrossentropy(label_smoothing=ls), t01, sig(z), sw, probs=True)
        # fused: Keras on sigmoid outputs vs fastdrop on logits (value only)
        f = L.BinaryCrossentropy(label_smoothing=ls).sum_loss(z, t01, sw) / m
        k = kval(keras.losses.BinaryCrossentropy(label_smoothing=ls), t01, sig(z), sw)
        print(f"{'BCE fused (logits) vs keras on sigmoid(z) ls='+str(ls)+tag:55s} fastdrop {f:.7f} keras {k:.7f} rel {abs(f-k)/abs(k):.1e}")
        cmp(f"CCE from_logits=True ls={ls}{tag}", L.CategoricalCrossentropy(from_logits=True, label_smoothing=ls), keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=ls), oh, z, sw)
        cmp(f"CCE probs ls={ls}{tag}", L.CategoricalCrossentropy(label_smoothing=ls), keras.losses.CategoricalCrossentropy(label_smoothing=ls), oh, softmax(z), sw, probs=True)
    cmp(f"SCCE from_logits=True{tag}", L.SparseCategoricalCrossentropy(from_logits=True), keras.losses.SparseCategoricalCrossentropy(from_logits=True), y, z, sw)
    cmp(f"SCCE probs{tag}", L.SparseCategoricalCrossentropy(), keras.losses.SparseCategoricalCrossentropy(), y, softmax(z), sw, probs=True)
    tr = rng.standard_normal((m, c)).astype(np.float32) * 2
    cmp(f"MSE{tag}", L.MeanSquaredError(), keras.losses.MeanSquaredError(), tr, z, sw)
    cmp(f"MAE{tag}", L.MeanAbsoluteError(), keras.losses.MeanAbsoluteError(), tr, z, sw)
    cmp(f"Huber(1.0){tag}", L.Huber(), keras.losses.Huber(), tr, z, sw)
    cmp(f"Huber(0.5){tag}", L.Huber(0.5), keras.losses.Huber(0.5), tr, z, sw)
# activations vs keras.activations
x = np.concatenate([rng.standard_normal(10000) * 4, np.linspace(-20, 20, 2001)]).astype(np.float32)
acts = {"tanh": keras.activations.tanh, "sigmoid": keras.activations.sigmoid, "softplus": keras.activations.softplus,
        "elu": keras.activations.elu, "gelu": keras.activations.gelu, "gelu_tanh": lambda v: keras.activations.gelu(v, approximate=True),
        "silu": keras.activations.silu, "leaky_relu": keras.activations.leaky_relu, "relu6": keras.activations.relu6, "linear": keras.activations.linear}
for name, f in acts.items():
    t = torch.tensor(x, requires_grad=True); yk = f(t); yk.sum().backward()
    yf = np.empty_like(x); _core.act_forward(name, x, yf)
    df = np.empty_like(x); _core.act_backward(name, np.ones_like(x), x, yf, df)
    ykn = yk.detach().numpy()
    print(f"activation {name:10s} max |fd - keras| fwd {np.abs(yf-ykn).max():.1e} (max rel {np.max(np.abs(yf-ykn)/np.maximum(np.abs(ykn),1e-30)):.1e})  bwd {np.abs(df - t.grad.numpy()).max():.1e}")

"""Model-level benchmarks of convolutional and recurrent networks beside PyTorch (and
Keras 3 for recurrent dropout, when installed): training samples/s, batch-1 latency, MC
dropout against T plain predictions, and the cost of recurrent dropout.  Each figure is a
ratio measured in the same run on the same inputs."""
import numpy as np


def _seed003(Seq, L):
    return Seq([L.Input((28, 28, 1)), L.Conv2D(32, (3, 3), activation="relu"),
                L.MaxPooling2D((2, 2)), L.Dropout(0.25), L.Flatten(),
                L.Dense(128, activation="relu"), L.Dropout(0.5),
                L.Dense(10, activation="softmax")], seed=0)


def _convnet(Seq, L):
    return Seq([L.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                L.Dropout(0.5), L.Dense(10, activation="softmax")], seed=0)


def _rnn(Seq, L, kind, dropout=0.0):
    cls = L.LSTM if kind == "lstm" else L.GRU
    return Seq([L.Input((28, 28)), cls(128, dropout=dropout, recurrent_dropout=dropout),
                L.Dense(10, activation="softmax")], seed=0)


def _torch_net(torch, name):
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


def _torch_trainer(torch, name, x, y, batch, channels_last=False):
    net = _torch_net(torch, name)
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


def _fd_trainer(model, x, y, batch):
    model.compile("adam", "sparse_categorical_crossentropy")

    def run():
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return run


def bench_models(ctx, torch=None):
    """Rows of model figures; ``ctx`` is the bench runner's context (measure, rng, log)."""
    from .. import layers as L
    from ..models import Sequential as Seq
    cfg = ctx.cfg
    batch = cfg["batch"]
    steps = cfg.get("model_steps", 4)
    n = steps * batch
    rng = ctx.rng
    rows = []
    img = rng.random((n, 28, 28, 1), dtype=np.float32)
    seq = rng.random((n, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    ctx.threads(ctx.n)
    specs = [("seed003", lambda: _seed003(Seq, L), img), ("mnist_convnet",
                                                          lambda: _convnet(Seq, L), img),
             ("lstm", lambda: _rnn(Seq, L, "lstm"), seq), ("gru", lambda: _rnn(Seq, L, "gru"), seq)]
    for name, make, x in specs:
        cases = {"fastdrop": _fd_trainer(make(), x, y, batch)}
        if torch is not None:
            cases["torch"] = _torch_trainer(torch, name, x, y, batch)[0]
            if name in ("seed003", "mnist_convnet"):
                cases["torch_cl"] = _torch_trainer(torch, name, x, y, batch, True)[0]
        r = ctx.measure(cases, scale=2.0)
        sps = {k: n / v["best"] for k, v in r.items()}
        best_torch = max([v for k, v in sps.items() if k != "fastdrop"], default=None)
        rows.append(dict(case=f"train {name}", fastdrop_sps=sps["fastdrop"],
                         torch_sps=best_torch,
                         vs_torch=None if best_torch is None else sps["fastdrop"] / best_torch))
        ctx.log(f"train {name}: {sps['fastdrop']:.0f} samples/s (torch {best_torch})")
    # recurrent dropout: cost against the same LSTM without it, and Keras 3 with it
    plain = _fd_trainer(_rnn(Seq, L, "lstm"), seq, y, batch)
    drop = _fd_trainer(_rnn(Seq, L, "lstm", 0.25), seq, y, batch)
    r = ctx.measure({"plain": plain, "dropout": drop}, scale=2.0)
    rows.append(dict(case="lstm dropout=recurrent_dropout=0.25 / without",
                     ratio=r["dropout"]["best"] / r["plain"]["best"],
                     fastdrop_sps=n / r["dropout"]["best"]))
    ctx.log(f"lstm dropout cost: {rows[-1]['ratio']:.2f}x")
    # batch-1 predict of mnist_convnet
    model = _convnet(Seq, L)
    x1 = img[:1].copy()
    cases = {"fastdrop": lambda: model.predict(x1)}
    if torch is not None:
        net = _torch_net(torch, "mnist_convnet").eval()
        xt1 = torch.from_numpy(x1.transpose(0, 3, 1, 2).copy())

        def tp():
            with torch.inference_mode():
                return torch.softmax(net(xt1), 1)
        cases["torch"] = tp
    r = ctx.measure(cases, scale=0.5)
    rows.append(dict(case="predict batch 1 mnist_convnet", fastdrop_us=r["fastdrop"]["best"] * 1e6,
                     torch_us=r["torch"]["best"] * 1e6 if "torch" in r else None))
    # MC dropout T=30 on 1000 images against 30 predict calls
    xs = rng.random((cfg.get("mc_images", 1000), 28, 28, 1), dtype=np.float32)
    T = 30
    r = ctx.measure({"mc": lambda: model.predict(xs, mc_samples=T, seed=0),
                     "predicts": lambda: [model.predict(xs) for _ in range(T)]}, scale=1.0)
    rows.append(dict(case=f"MC dropout T={T} mnist_convnet / {T} predicts",
                     ratio=r["mc"]["best"] / r["predicts"]["best"]))
    ctx.log(f"MC T={T}: {rows[-1]['ratio']:.2f}x of {T} predicts")
    return rows


def model_targets(rows, add):
    goals = {"train seed003": 1.5, "train mnist_convnet": 1.5, "train lstm": 1.3,
             "train gru": 1.5}
    for r in rows:
        if r["case"] in goals and r.get("vs_torch") is not None:
            add(f"{r['case']} vs PyTorch (best layout)", r["vs_torch"], goal=goals[r["case"]])
        elif r["case"].startswith("lstm dropout"):
            add(r["case"], r["ratio"], goal=1.15, lower_is_better=True)
        elif r["case"].startswith("predict batch 1") and r.get("torch_us"):
            add(f"{r['case']} latency / PyTorch", r["fastdrop_us"] / r["torch_us"], goal=0.5,
                lower_is_better=True)
        elif r["case"].startswith("MC dropout"):
            add(r["case"], r["ratio"], goal=0.35, lower_is_better=True)

"""PyTorch baselines for the accuracy figures in the issue notes (not part of the package).

    python tools/torch_baselines.py lstm     # Input((28, 28)) -> LSTM(128) -> Dense(10)
    python tools/torch_baselines.py convnet  # Keras mnist_convnet

Full Fashion-MNIST (fastdrop.datasets), Adam 1e-3, batch 128; prints the test accuracy
after every epoch and the mean of the last 3.
"""
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from fastdrop.datasets import fashion_mnist

kind = sys.argv[1] if len(sys.argv) > 1 else "lstm"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else (8 if kind == "lstm" else 12)
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
torch.manual_seed(0)
(xtr, ytr), (xte, yte) = fashion_mnist(subset="full")
xtr = torch.tensor(xtr.reshape(-1, 28, 28) / 255.0, dtype=torch.float32)
xte = torch.tensor(xte.reshape(-1, 28, 28) / 255.0, dtype=torch.float32)
ytr = torch.tensor(ytr, dtype=torch.long)
yte = torch.tensor(yte, dtype=torch.long)


class LSTMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


class ConvNet(nn.Module):   # keras.io mnist_convnet
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                               nn.Dropout(0.5), nn.Linear(1600, 10))

    def forward(self, x):
        return self.f(x[:, None])


net = LSTMNet() if kind == "lstm" else ConvNet()
opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
accs = []
for ep in range(epochs):
    net.train()
    perm = torch.randperm(len(xtr))
    t0 = time.perf_counter()
    for i in range(0, len(xtr), 128):
        idx = perm[i:i + 128]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        acc = float((net(xte).argmax(1) == yte).float().mean())
    accs.append(acc)
    print(f"epoch {ep + 1}: test accuracy {acc:.4f}  ({len(xtr) / dt:.0f} samples/s)", flush=True)
print(f"{kind}: mean of the last 3 epochs {np.mean(accs[-3:]):.4f}")

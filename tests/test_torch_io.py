"""PyTorch weights into fastdrop models (fastdrop.io.load_torch_state_dict).  The oracle is
PyTorch's own forward pass (in eval mode); without torch, plain NumPy state_dicts check the
layout conversions against NumPy references and the error paths."""
import numpy as np
import pytest

from fastdrop.io import load_torch_state_dict
from fastdrop.layers import (GRU, LSTM, BatchNormalization, Bidirectional, Conv2D, Dense,
                             Dropout, Embedding, Flatten, Input, MaxPooling2D, SimpleRNN)
from fastdrop.models import Sequential


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)


# ------------------------------------------------------------------ without torch
def test_numpy_state_dict_dense_and_flatten_permutation():
    rng = np.random.default_rng(0)
    m = Sequential([Input((3, 4, 2)), Flatten(), Dropout(0.2), Dense(5)], seed=0)
    W = rng.standard_normal((5, 24)).astype(np.float32)     # PyTorch (out, C*H*W)
    b = rng.standard_normal(5).astype(np.float32)
    load_torch_state_dict(m, {"fc.weight": W, "fc.bias": b})
    x = rng.standard_normal((6, 3, 4, 2)).astype(np.float32)         # NHWC
    ref = x.transpose(0, 3, 1, 2).reshape(6, -1) @ W.T + b            # PyTorch on NCHW
    close(m.predict(x), ref)


def test_numpy_state_dict_mismatches_name_both_layers():
    m = Sequential([Input((4,)), Dense(3), Dense(2)], seed=0)
    good = {"a.weight": np.zeros((3, 4)), "a.bias": np.zeros(3),
            "b.weight": np.zeros((2, 3)), "b.bias": np.zeros(2)}
    before = [w.copy() for w in m.get_weights()]
    bad = dict(good, **{"b.weight": np.zeros((2, 5))})
    with pytest.raises(ValueError, match=r"'dense_?\d*' \(Dense\).*PyTorch 'b'.*shape"):
        load_torch_state_dict(m, bad)
    for a, b in zip(m.get_weights(), before):              # nothing changed
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="left over.*'c'"):
        load_torch_state_dict(m, dict(good, **{"c.weight": np.zeros((1, 2))}))
    with pytest.raises(ValueError, match="no PyTorch counterpart"):
        load_torch_state_dict(m, {"a.weight": np.zeros((3, 4)), "a.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="Conv2D|conv"):
        mc = Sequential([Input((5, 5, 1)), Conv2D(2, 3)], seed=0)
        load_torch_state_dict(mc, {"l.weight": np.zeros((2, 9)), "l.bias": np.zeros(2)})
    with pytest.raises(ValueError, match="NaN"):
        load_torch_state_dict(m, dict(good, **{"a.bias": np.full(3, np.nan)}))


# ------------------------------------------------------------------ with torch
@pytest.fixture(scope="module")
def torch():
    t = pytest.importorskip("torch")
    t.manual_seed(0)
    return t


def test_torch_cnn(torch):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, (3, 2), stride=(1, 2))
            self.bn1 = nn.BatchNorm2d(6)
            self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
            self.pool = nn.MaxPool2d(2)
            self.drop = nn.Dropout(0.3)
            self.fc = nn.Linear(4 * 5 * 2, 7)
            self.bn2 = nn.BatchNorm1d(7)
            self.out = nn.Linear(7, 3)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            x = self.drop(torch.flatten(x, 1))
            return self.out(torch.relu(self.bn2(self.fc(x))))

    net = Net()
    net.train()
    with torch.no_grad():                      # give BN real running statistics
        for _ in range(3):
            net(torch.randn(16, 3, 12, 11))
    net.eval()
    from fastdrop.layers import Activation
    fd = Sequential([Input((12, 11, 3)), Conv2D(6, (3, 2), strides=(1, 2)),
                     BatchNormalization(), Activation("relu"),
                     Conv2D(4, 3, padding="same", activation="relu", use_bias=False),
                     MaxPooling2D(2), Flatten(), Dropout(0.3), Dense(7),
                     BatchNormalization(), Activation("relu"), Dense(3)], seed=0)
    load_torch_state_dict(fd, net)              # the module: eps/momentum/padding checked
    assert fd.layers[1].epsilon == 1e-5 and fd.layers[1].momentum == pytest.approx(0.9)
    x = torch.randn(9, 3, 12, 11)
    with torch.no_grad():
        ref = net(x).numpy()
    close(fd.predict(x.numpy().transpose(0, 2, 3, 1)), ref)
    # the state_dict alone works as well when the layers mirror eps
    fd2 = Sequential([Input((12, 11, 3)), Conv2D(6, (3, 2), strides=(1, 2)),
                      BatchNormalization(epsilon=1e-5), Activation("relu"),
                      Conv2D(4, 3, padding="same", activation="relu", use_bias=False),
                      MaxPooling2D(2), Flatten(), Dropout(0.3), Dense(7),
                      BatchNormalization(epsilon=1e-5), Activation("relu"), Dense(3)], seed=0)
    load_torch_state_dict(fd2, net.state_dict())
    close(fd2.predict(x.numpy().transpose(0, 2, 3, 1)), ref)
    # a padding fastdrop cannot express is refused, naming both layers
    net.conv2.padding = (2, 2)
    with pytest.raises(ValueError, match=r"conv2d_?\d*.*'conv2'.*padding"):
        load_torch_state_dict(fd, net)


def test_torch_embedding_lstm_gru(torch):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 5)
            self.lstm = nn.LSTM(5, 4, num_layers=2, batch_first=True, bidirectional=True)
            self.gru = nn.GRU(8, 3, batch_first=True)
            self.rnn = nn.RNN(3, 2, batch_first=True)
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            h, _ = self.lstm(self.emb(x))
            h, _ = self.gru(h)
            h, _ = self.rnn(h)
            return self.fc(h[:, -1])

    net = Net().eval()
    fd = Sequential([Input((6,)), Embedding(20, 5),
                     Bidirectional(LSTM(4, return_sequences=True)),
                     Bidirectional(LSTM(4, return_sequences=True)),
                     GRU(3, return_sequences=True, reset_after=True), SimpleRNN(2),
                     Dense(2)], seed=0)
    load_torch_state_dict(fd, net.state_dict())
    x = torch.randint(0, 20, (5, 6))
    with torch.no_grad():
        ref = net(x).numpy()
    close(fd.predict(x.numpy()), ref)
    load_torch_state_dict(fd, net)             # module given: cell kinds checked
    bad = Sequential([Input((6,)), Embedding(20, 5), LSTM(4, return_sequences=True),
                      LSTM(4, return_sequences=True), GRU(3, return_sequences=True),
                      SimpleRNN(2), Dense(2)], seed=0)
    with pytest.raises(ValueError, match=r"'lstm.*\(LSTM\).*PyTorch 'lstm .*bidirectional"):
        load_torch_state_dict(bad, net.state_dict())
    gru_old = Sequential([Input((6, 8)), GRU(3, reset_after=False)], seed=0)
    with pytest.raises(ValueError, match="reset_after=True"):
        load_torch_state_dict(gru_old, {"g.weight_ih_l0": np.zeros((9, 8)),
                                        "g.weight_hh_l0": np.zeros((9, 3)),
                                        "g.bias_ih_l0": np.zeros(9),
                                        "g.bias_hh_l0": np.zeros(9)})

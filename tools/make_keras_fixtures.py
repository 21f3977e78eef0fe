"""Write the small Keras model files the loader tests read without Keras installed:
tests/data/keras/*.keras, *.h5 and, beside each model, <name>_io.npz with the inputs ``x``
and Keras's own predictions ``y`` (inference mode) for them.

    KERAS_BACKEND=torch python tools/make_keras_fixtures.py

Needs keras 3 (any backend; torch is used here) and h5py.  The models are tiny (the files
stay well under 200 KB together) but use every feature the tests check: a CNN with
BatchNormalization, SpatialDropout2D, strided and non-square kernels, tanh, 'same' padding
and average pooling; an RNN on integer tokens with Embedding(mask_zero=True), a
Bidirectional LSTM with recurrent dropout and GRUs with both reset_after settings; a chain
Functional MLP with an L2 regularizer; and a hand-written file in tf.keras 2's legacy .h5
layout (batch_input_shape, dtype strings, weight names ending in ':0', OptimizerV2 slot
names) holding the MLP's weights.  Each is trained for a few steps so the optimizer holds
real state.
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import keras  # noqa: E402
from keras import layers as L  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "keras")


def cnn():
    m = keras.Sequential([
        keras.Input((10, 10, 1)),
        L.Conv2D(4, (3, 2), strides=(2, 1), activation="tanh"),
        L.BatchNormalization(),
        L.SpatialDropout2D(0.2),
        L.AveragePooling2D(2),
        L.Conv2D(3, 2, padding="same", activation="relu"),
        L.Flatten(),
        L.Dropout(0.3),
        L.Dense(3, activation="softmax"),
    ], name="cnn")
    m.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    rng = np.random.default_rng(1)
    x = rng.random((64, 10, 10, 1), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return m, x[:8]


def rnn():
    m = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        L.Embedding(20, 4, mask_zero=True),
        L.Bidirectional(L.LSTM(3, return_sequences=True, dropout=0.1, recurrent_dropout=0.2)),
        L.GRU(3, reset_after=False, return_sequences=True),
        L.GRU(2),
        L.Dense(1, activation="sigmoid"),
    ], name="rnn")
    m.compile(optimizer=keras.optimizers.RMSprop(1e-3, momentum=0.5),
              loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(2)
    x = rng.integers(1, 20, (64, 6))
    x[::3, :2] = 0                       # padded sequences
    y = rng.integers(0, 2, 64)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return m, x[:8]


def mlp():
    inp = keras.Input((6,), name="features")
    h = L.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(inp)
    h = L.Dropout(0.5)(h)
    h = L.Dense(5, activation="elu")(h)
    out = L.Dense(2)(h)
    m = keras.Model(inp, out, name="mlp")
    m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse", metrics=["mae"])
    rng = np.random.default_rng(3)
    x = rng.random((64, 6), dtype=np.float32)
    y = rng.random((64, 2), dtype=np.float32)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return m, x[:8]


def tf2_h5(model, path):
    """The MLP's weights in the layout tf.keras 2 wrote (as a Sequential of Dense layers
    with a Dropout; 'dense/kernel:0' names; OptimizerV2 Adam slots)."""
    denses = [l for l in model.layers if isinstance(l, L.Dense)]
    names = ["dense", "dense_1", "dense_2"]
    init = {"class_name": "GlorotUniform", "config": {"seed": None}}
    zeros = {"class_name": "Zeros", "config": {}}
    layers = [{"class_name": "InputLayer", "config": {
        "batch_input_shape": [None, 6], "dtype": "float32", "sparse": False, "ragged": False,
        "name": "dense_input"}}]
    acts = ["relu", "elu", "linear"]
    for i, (n, d) in enumerate(zip(names, denses)):
        cfg = {"name": n, "trainable": True, "dtype": "float32", "units": int(d.units),
               "activation": acts[i], "use_bias": True, "kernel_initializer": init,
               "bias_initializer": zeros, "kernel_regularizer": None,
               "bias_regularizer": None, "activity_regularizer": None,
               "kernel_constraint": None, "bias_constraint": None}
        if i == 0:
            cfg["batch_input_shape"] = [None, 6]
            cfg["kernel_regularizer"] = {"class_name": "L2", "config": {"l2": 0.001}}
        layers.append({"class_name": "Dense", "config": cfg})
        if i == 0:
            layers.append({"class_name": "Dropout", "config": {
                "name": "dropout", "trainable": True, "dtype": "float32", "rate": 0.5,
                "noise_shape": None, "seed": None}})
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    training = {"loss": "mean_squared_error", "metrics": ["mae"], "weighted_metrics": None,
                "loss_weights": None,
                "optimizer_config": {"class_name": "Adam", "config": {
                    "name": "Adam", "learning_rate": 0.001, "decay": 0.0, "beta_1": 0.9,
                    "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False}}}
    rng = np.random.default_rng(4)
    with h5py.File(path, "w", libver="latest") as f:      # compact groups: a small file
        f.attrs["keras_version"] = "2.9.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["training_config"] = json.dumps(training)
        mw = f.create_group("model_weights")
        mw.attrs["keras_version"] = "2.9.0"
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["layer_names"] = np.array([b"dense", b"dropout", b"dense_1", b"dense_2"])
        opt_names, opt_vals = [b"Adam/iter:0"], [np.asarray(7, np.int64)]
        ms, vs = [], []
        for n, d in zip(names, denses):
            g = mw.create_group(n)
            wn = [f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()]
            g.attrs["weight_names"] = np.array(wn)
            for w, v in zip(wn, d.get_weights()):
                g.create_dataset(w.decode(), data=v)
            for w, v in zip(wn, d.get_weights()):
                base = w.decode()[:-2]
                ms.append((f"Adam/{base}/m:0".encode(),
                           (0.01 * rng.standard_normal(v.shape)).astype(np.float32)))
                vs.append((f"Adam/{base}/v:0".encode(),
                           (1e-4 * rng.random(v.shape)).astype(np.float32)))
        mw.create_group("dropout").attrs["weight_names"] = np.array([], "S1")
        for n_, v in ms + vs:                   # OptimizerV2 order: all m, then all v
            opt_names.append(n_)
            opt_vals.append(v)
        og = f.create_group("optimizer_weights")
        og.attrs["weight_names"] = np.array(opt_names)
        for n_, v in zip(opt_names, opt_vals):
            og.create_dataset(n_.decode(), data=v)
    slots = {n_.decode(): v for n_, v in ms + vs}
    return slots


def main():
    os.makedirs(OUT, exist_ok=True)
    keras.utils.set_random_seed(0)
    for name, make, exts in (("cnn", cnn, ("keras", "h5")), ("rnn", rnn, ("keras",)),
                             ("mlp", mlp, ("keras",))):
        model, x = make()
        y = np.asarray(model.predict(x, verbose=0))
        for ext in exts:
            model.save(os.path.join(OUT, f"{name}.{ext}"))
        np.savez(os.path.join(OUT, f"{name}_io.npz"), x=x, y=y)
        if name == "mlp":
            slots = tf2_h5(model, os.path.join(OUT, "mlp_tf2.h5"))
            np.savez(os.path.join(OUT, "mlp_tf2_io.npz"), x=x, y=y,
                     m0=slots["Adam/dense/kernel/m:0"], v2=slots["Adam/dense_2/bias/v:0"])
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1024:.0f} KB, to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

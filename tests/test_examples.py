"""The mission's seed examples, run as a Keras user would (only the imports changed)."""
import numpy as np
import pytest

from fastdrop.layers import (LSTM, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D)
from fastdrop.models import Sequential

num_classes = 2
img_rows, img_cols = 28, 28


def seed003_model():
    model = Sequential()
    model.add(Conv2D(filters=32, kernel_size=(3, 3), activation='relu',
                     input_shape=(img_rows, img_cols, 1)))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(rate=0.25))
    model.add(Flatten())
    model.add(Dense(units=128, activation='relu'))
    model.add(Dropout(rate=0.5))
    model.add(Dense(units=num_classes, activation='softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    return model


def test_seed003_builds_the_keras_model_and_rejects_its_own_labels():
    model = seed003_model()
    assert model.count_params() == 692930          # as Keras
    assert model.output_shape == (None, 2)
    text = model.summary(print_fn=None)
    assert "(None, 26, 26, 32)" in text and "(None, 13, 13, 32)" in text
    X = np.random.rand(2000, img_rows, img_cols, 1).astype('float32')
    y = np.array([[1 if i < num_classes else 0 for j in range(img_cols)] for i in range(img_rows)])
    Y = np.zeros((len(y), num_classes)).astype('uint8')
    for i in range(len(y)):
        Y[i][y[i]] = 1
    with pytest.raises(ValueError, match="28 samples but x has 2000"):
        model.fit(X, Y, batch_size=128, epochs=10, verbose=1)


def test_seed003_trains_with_labels_of_the_right_length():
    model = seed003_model()
    rng = np.random.default_rng(0)
    X = rng.random((256, img_rows, img_cols, 1)).astype('float32')
    labels = (X[:, :14].mean(axis=(1, 2, 3)) > X[:, 14:].mean(axis=(1, 2, 3))).astype(int)
    Y = np.eye(num_classes, dtype='uint8')[labels]
    h = model.fit(X, Y, batch_size=128, epochs=2, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    p = model.predict(X[:5])
    assert p.shape == (5, 2)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_lstm_over_image_rows_trains():
    model = Sequential([Input((28, 28)), LSTM(16), Dense(10, activation="softmax")], seed=0)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(1)
    x = rng.random((64, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    h = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    assert model.count_params() == 4 * (28 * 16 + 16 * 16 + 16) + 170

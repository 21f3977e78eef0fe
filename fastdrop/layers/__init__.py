"""Layers of a fastdrop ``Sequential`` model (Keras names, arguments, defaults and weight
layouts).  Each layer is configuration plus shape inference and declared variables; its
stage (``fastdrop.engine``) does the computing.  See ``fastdrop.engine`` for how to add
a layer."""
from .base import Layer, Variable
from .core import (ELU, Activation, Dense, Flatten, Input, InputLayer, LeakyReLU, ReLU,
                   Reshape, Softmax)
from .noise import AlphaDropout, Dropout, GaussianDropout


from ..registry import LAYER_TYPES, register_layer  # noqa: E402

for _c in (Dense, Dropout, GaussianDropout, AlphaDropout, Activation, ReLU, LeakyReLU, ELU,
           Softmax, Flatten, Reshape, InputLayer):
    register_layer(_c)

from .conv import (AveragePooling2D, BatchNormalization, Conv2D,  # noqa: E402
                   GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D, SpatialDropout2D)
from .recurrent import (GRU, LSTM, Bidirectional, Embedding,  # noqa: E402
                        GlobalAveragePooling1D, GlobalMaxPooling1D, SimpleRNN)

_CONV = (Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D,
         SpatialDropout2D, BatchNormalization)
_RNN = (Embedding, SimpleRNN, LSTM, GRU, Bidirectional, GlobalAveragePooling1D,
        GlobalMaxPooling1D)
for _c in _CONV + _RNN:
    register_layer(_c)


def _register(*classes):
    for c in classes:
        register_layer(c)
        globals()[c.__name__] = c


__all__ = ["Layer", "Variable", "Dense", "Dropout", "GaussianDropout", "AlphaDropout",
           "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Flatten", "Reshape", "Input", "InputLayer", "LAYER_TYPES"] + [c.__name__ for c in _CONV + _RNN]

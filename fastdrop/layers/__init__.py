"""Layers of a fastdrop ``Sequential`` model (Keras names, arguments and defaults)."""
from .._layers_v1 import *  # noqa: F401,F403  (transitional: replaced by the v2 layers)
from .._layers_v1 import (ACTIVATIONS, FUSED_BACKWARD, LAYER_TYPES, Layer,  # noqa: F401
                          _activation, _dropout_seed)
from .recurrent import (GRU, LSTM, Bidirectional, Embedding, GlobalAveragePooling1D,  # noqa: F401,E501
                        GlobalMaxPooling1D, SimpleRNN)

"""Stages, one module per layer family, each family's fusion rules beside its stages:

* ``core``: Dense (GEMM + fused bias/activation/dropout epilogue), Activation;
* ``noise``: Dropout, GaussianDropout, AlphaDropout as their own stages;
* ``conv``: Conv2D (implicit GEMM), Conv2D + BatchNormalization, pooling, BatchNorm,
  SpatialDropout2D;
* ``recurrent``: SimpleRNN / LSTM / GRU, Bidirectional, Embedding, 1-D global pooling.

Importing this package registers the fusion rules, in this order.  Rules match a layer by
its declared ``kind``; nothing here imports a layer class.
"""
from . import core, noise, conv, recurrent  # noqa: F401  (registers the rules in order)

"""Models: the public ``Sequential`` (``sequential``), a thin API over the loops of its
``Trainer`` mixin (``trainer``: fit / evaluate / predict / MC dropout) and the input
preparation they share (``inputs``)."""
from .sequential import NonFiniteLossError, Sequential, load_model

__all__ = ["Sequential", "load_model", "NonFiniteLossError"]

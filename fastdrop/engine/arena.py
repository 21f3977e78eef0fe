"""One allocation for every stage's buffers at a batch capacity."""
import math

import numpy as np

_ALIGN = 64


class Arena:
    """Allocates the buffers all stages declare for ``capacity`` rows in one block of
    memory (64-byte aligned views) and hands them to the stages as ``stage.buf``."""

    def __init__(self):
        self.capacity = 0
        self.block = None
        self.shapes = None

    def allocate(self, stages, capacity, extra=None, capacities=None):
        """extra: {name: (shape, dtype)} for the model's own buffers; returns their views.
        capacities: rows per stage (default ``capacity`` for all), e.g. MC dropout's
        deterministic prefix for m rows and the stages after it for T*m rows."""
        caps = capacities or [capacity] * len(stages)
        specs = [(s, s.buffers(c)) for s, c in zip(stages, caps)]
        extra = extra or {}
        total = 0
        layout = []
        for owner, spec in specs + [(None, extra)]:
            for name, (shape, dtype) in spec.items():
                dtype = np.dtype(dtype)
                nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
                layout.append((owner, name, shape, dtype, total, nbytes))
                total += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        raw = np.empty(total + _ALIGN, np.uint8)
        base = (-raw.ctypes.data) % _ALIGN
        self.block = raw
        out = {}
        for s in stages:
            s.buf = {}
        for owner, name, shape, dtype, off, nbytes in layout:
            view = raw[base + off: base + off + nbytes].view(dtype).reshape(shape)
            if owner is None:
                out[name] = view
            else:
                owner.buf[name] = view
        self.capacity = capacity
        self.nbytes = total
        return out

    @staticmethod
    def row_bytes(stages):
        """Buffer bytes per row of each stage (from its declaration for one row)."""
        out = []
        for s in stages:
            b = 0
            for shape, dtype in s.buffers(1).values():
                b += math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
            out.append(max(1, b))
        return out

"""The stage contract (llm.c style): a forward/backward pair over preallocated buffers.

A stage executes one layer, or several fused layers (see ``plan.py``).  It never holds a
reference to the model; everything about the call comes in ``ctx``
(``fastdrop.engine.context.Context``), everything about the weights from its layers'
variable views (``layer.kernel``, ``layer.dkernel``, ...: read them at call time, the
model may rebind them, e.g. after ``load``).

Life cycle, driven by the model:
1. ``bind(in_shape)`` with the concrete per-sample input shape (no ``None``: a sequence
   length is known per call); returns the per-sample output shape.  Called again when
   the concrete input shape changes.
2. ``buffers(capacity)`` -> {name: (shape, dtype)} for at most ``capacity`` rows; the
   arena allocates them once and sets ``self.buf[name]`` (views).  Workspace that
   backward needs (gate values, argmax, masks) is declared here too.  Nothing is
   allocated per step.
3. ``forward(ctx, x) -> y``: x is (ctx.m, *in_shape) float32 C-contiguous (may be a view
   of the previous stage's buffer; do not write into it).  Returns y, usually a view
   ``self.buf["out"][:ctx.m]``.  Noise is drawn only when ``ctx.noise``; batch statistics
   and updates of state variables only when ``ctx.training``.
4. ``backward(ctx, dy, need_dx) -> dx``: only after a TRAIN forward with the same ctx.
   Writes the gradients of its layers' trainable variables into ``layer.d<name>``
   (overwrite, not accumulate); returns dx (ctx.m, *in_shape) or None if not need_dx.
   The model adds regularizer gradients afterwards.

Class attributes: ``noisy`` (draws noise: the MC prefix stops before the first noisy
stage), ``layers`` (the layers it executes, in order).
"""
import numpy as np


class Stage:
    noisy = False

    def __init__(self, layers, index=0):
        self.layers = list(layers)
        self.index = index          # model index of the first layer (keys the noise)
        self.buf = {}
        self.in_shape = None
        self.out_shape = None

    # -- shapes
    def bind(self, in_shape):
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(self.infer_shape(self.in_shape))
        return self.out_shape

    def infer_shape(self, in_shape):
        """Per-sample output shape for a concrete per-sample input shape."""
        shape = in_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    # -- memory
    def buffers(self, capacity):
        """{name: (shape, dtype)} for ``capacity`` rows.  Default: out and dx."""
        return {"out": ((capacity,) + self.out_shape, np.float32),
                "dx": ((capacity,) + self.in_shape, np.float32)}

    # -- compute
    def forward(self, ctx, x):
        raise NotImplementedError

    def backward(self, ctx, dy, need_dx):
        raise NotImplementedError

    def noise_masks(self, m):
        """{name: bool keep array} of the noise the last TRAIN forward drew (tests and
        introspection; see ``Sequential.loss_and_gradients``)."""
        return {}

    def mask_out(self, ctx, mask):
        """The sequence mask (m, T) after this stage, given the one before it.  Default:
        kept while the time axis is kept."""
        if mask is None or len(self.out_shape) < 2 or self.out_shape[0] != self.in_shape[0]:
            return None
        return mask

    def __repr__(self):
        return f"<{type(self).__name__} {[l.name for l in self.layers]}>"


class IdentityStage(Stage):
    """A layer that does nothing at run time (InputLayer, a no-op reshape, a noise layer
    with rate 0 ...): passes x through, and dy back."""

    def buffers(self, capacity):
        return {}

    def forward(self, ctx, x):
        return x.reshape((ctx.m,) + self.out_shape)

    def backward(self, ctx, dy, need_dx):
        return dy.reshape((ctx.m,) + self.in_shape) if need_dx else None

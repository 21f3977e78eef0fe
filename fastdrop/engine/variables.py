"""Variables of a model: one contiguous block of weights (trainable and frozen), its
gradient block, and a separate block of state variables (BatchNorm's moving statistics:
saved, counted as non-trainable, never optimised).  Layers hold views."""
import numpy as np

from .. import random as _random


class VariableStore:
    def __init__(self, layers, seed):
        self.vars = [v for layer in layers for v in layer.variables]
        self.weight_vars = [v for v in self.vars if not v.state]
        self.state_vars = [v for v in self.vars if v.state]
        nw = sum(v.size for v in self.weight_vars)
        ns = sum(v.size for v in self.state_vars)
        self.params = np.empty(nw, np.float32)
        self.grads = np.zeros(nw, np.float32)
        self.state = np.empty(ns, np.float32)
        # initial values are drawn for every variable in layer order from one generator, so
        # a layer's values do not depend on when the model was built; variables that already
        # hold values (an earlier build, set_weights) keep them
        rng = np.random.default_rng(_random.derive(seed, _random.KEY_INIT))
        offw = offs = 0
        self.ranges = {}
        for v in self.vars:
            init = np.asarray(v.initializer(v.shape, rng), np.float32)
            if v.state:
                view = self.state[offs:offs + v.size].reshape(v.shape)
                offs += v.size
                grad = None
            else:
                view = self.params[offw:offw + v.size].reshape(v.shape)
                grad = self.grads[offw:offw + v.size].reshape(v.shape)
                self.ranges[id(v)] = (offw, offw + v.size)
                offw += v.size
            if v.value is not None and tuple(v.value.shape) == v.shape:
                view[...] = v.value
            else:
                if init.shape != v.shape:
                    raise ValueError(f"initializer of {v.layer.name}/{v.name} returned shape "
                                     f"{init.shape}, expected {v.shape}")
                view[...] = init
            v.value = view
            v.grad = grad
            setattr(v.layer, v.name, view)
            if grad is not None:
                setattr(v.layer, "d" + v.name, grad)

    def is_trainable(self, v):
        return (not v.state) and v.trainable and v.layer.trainable

    def trainable_segments(self):
        """Coalesced [lo, hi) ranges of the weight block that train (frozen layers out)."""
        segs = []
        for v in self.weight_vars:
            if not self.is_trainable(v):
                continue
            lo, hi = self.ranges[id(v)]
            if segs and segs[-1][1] == lo:
                segs[-1] = (segs[-1][0], hi)
            else:
                segs.append((lo, hi))
        return segs

    def variable_segments(self):
        """[lo, hi) of each trainable variable (per-variable gradient clipping)."""
        return [self.ranges[id(v)] for v in self.weight_vars if self.is_trainable(v)]

    def counts(self):
        trainable = sum(v.size for v in self.weight_vars if self.is_trainable(v))
        return trainable, int(self.params.size + self.state.size - trainable)

"""The per-call context handed to every stage: mode, step, rows, global sample offset and
the noise keys.

Noise keying (the dropout RNG contract, design.md): a noise layer's bits come from the
counter-keyed generator with a seed derived from (base seed, key space, layer index, step
or pass), and the element index of a sample's bits starts at ``sample * per_sample`` where
``sample`` is the sample's *global* index in the call.  So a sample's mask never depends on
the batch it is computed in.

* TRAIN: seed = derive(base, KEY_DROPOUT, layer, step); samples are counted from the start
  of the global batch (the step key already makes every batch's noise distinct).  A call
  that computes rows ``[offset, offset + m)`` of a global batch (one rank's share in
  ``fastdrop.distributed``) draws exactly the bits one process draws for those rows.
* MC:    rows are ``passes`` blocks of ``samples`` rows (row = pass * samples + s); pass p
  uses seed = derive(call seed, KEY_MC, layer, p) and sample s has global index
  ``offset + s``.  The result of an MC prediction is therefore the same for any chunking.
* INFER: no noise.
"""
import numpy as np

from .. import _core
from .. import random as _random

TRAIN = "train"
INFER = "infer"
MC = "mc"
MODES = (TRAIN, INFER, MC)


class Context:
    """What a stage needs to know about the current call.

    mode     TRAIN | INFER | MC
    step     global training step (TRAIN; keys the masks)
    m        rows in this call (in MC: passes * samples)
    samples  distinct samples in this call (m // passes)
    passes   MC passes stacked in the rows (1 outside MC)
    offset   global index of the first sample (TRAIN: row in the global batch, non-zero
             for a rank's share in data-parallel training; MC: index in the predict call)
    seed     base seed of the noise (model seed in TRAIN, the call's seed in MC)
    """

    __slots__ = ("mode", "step", "m", "samples", "passes", "offset", "seed", "seq_mask", "tiled", "training",
                 "noise")

    def __init__(self, mode, m, step=0, seed=0, passes=1, offset=0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.step = int(step)
        self.m = int(m)
        self.passes = int(passes)
        self.samples = self.m // self.passes
        self.offset = int(offset)
        self.seed = int(seed)
        self.seq_mask = None   # (m, T) bool: steps to skip (Embedding(mask_zero=True))
        self.tiled = False     # MC: every pass's rows hold the same input (after the prefix)
        self.training = mode == TRAIN      # batch statistics, state updates
        self.noise = mode != INFER         # noise layers draw noise (TRAIN and MC)

    def noise_seed(self, layer_index, layer_seed=None, key=_random.KEY_DROPOUT, part=0,
                   pass_index=0):
        """The 64-bit seed of one noise stream.  ``layer_seed`` (a layer's own ``seed``
        argument) replaces the model seed in TRAIN; ``part`` separates several streams of
        one layer (e.g. per-gate RNN masks)."""
        if self.mode == MC:
            keys = (_random.KEY_MC, layer_index, pass_index)
            base = self.seed
        else:
            keys = (key, layer_index, self.step)
            base = self.seed if layer_seed is None else layer_seed
        if part:
            keys = keys + (part,)
        return _random.derive(base, *keys)

    def mask(self, out, rate, per_sample, layer_index, layer_seed=None,
             key=_random.KEY_DROPOUT, part=0):
        """Fill ``out`` (uint8, >= ceil(m*per_sample/8) bytes) with the bit-packed keep
        mask of all ``m`` rows, ``per_sample`` bits per row (row r's bits at
        [r*per_sample, (r+1)*per_sample)), keyed as described in the module docstring.
        Returns the view of ``out`` that holds the bits."""
        n = self.m * per_sample
        view = out[:(n + 7) // 8]
        if self.mode == TRAIN or self.mode == INFER:
            seed = self.noise_seed(layer_index, layer_seed, key, part)
            if self.offset:
                _core.dropout_mask_range(self.offset * per_sample, n, seed, rate, view, 0)
            else:
                _core.dropout_mask(n, seed, rate, view)
            return view
        s = self.samples
        for p in range(self.passes):
            _core.dropout_mask_range(self.offset * per_sample, s * per_sample,
                                     self.noise_seed(layer_index, layer_seed, key, part, p),
                                     rate, view, p * s * per_sample)
        return view

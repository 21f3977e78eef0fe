"""Recurrent stages at the sizes real models use (units 128, batch 16-128, 28 steps) against
the float64 reference: the packed micro-kernel panels must fit every ISA's register block
(a 14-row AVX-512 panel overflowed a workspace sized for 16-row multiples)."""
import numpy as np
import pytest

import test_rnn as T_
from fastdrop.engine import TRAIN, Context
from fastdrop.reference import rnn as R


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("m,T,F,u", [(128, 28, 28, 128), (16, 2, 4, 128), (70, 3, 5, 64)])
def test_large_cells_match_reference(cell, m, T, F, u, isa):
    rng = np.random.default_rng(4)
    L = T_.new(cell, u)
    st = T_.make(L, (T, F), m, rng, scale=None)   # the layers' own initializers, as in a model
    x = rng.standard_normal((m, T, F)).astype(np.float32)
    ctx = Context(TRAIN, m, step=1)
    y = st.forward(ctx, x)
    yr, cache = T_.ref_layer(L, x)
    T_.close(y, yr, what="forward")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = st.backward(ctx, dy, True)
    ref = R.rnn_backward(cache, dy)
    T_.close(dx, ref[0], what="dx")
    T_.check_grads(L, ref)

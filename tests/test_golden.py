"""Golden MLP results recorded with the v1 engine (tools/make_golden.py) before Engine v2:
the same seed gives the same weights — bit for bit when the kernels sum in the same order
(same ISA path and GEMM blocking: the fingerprint matches), else to float32 rounding — and
a model file written by the previous release loads and predicts identically."""
import os

import numpy as np
import pytest

import golden_models
import fastdrop

HERE = os.path.join(os.path.dirname(__file__), "data")
GOLD = np.load(os.path.join(HERE, "golden_mlp.npz"))
SAME_KERNELS = bytes(GOLD["fingerprint"]).decode() == golden_models.fingerprint()


@pytest.mark.parametrize("name", golden_models.CASES)
def test_seeded_training_matches_v1(name):
    params, pred = golden_models.run(name)
    want_p, want_y = GOLD[name + "/params"], GOLD[name + "/pred"]
    if SAME_KERNELS:
        assert np.array_equal(params, want_p), "weights differ from the v1 engine's bits"
        assert np.array_equal(pred, want_y)
    else:  # other summation order: equal up to accumulated float32 rounding
        np.testing.assert_allclose(params, want_p, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(pred, want_y, rtol=1e-3, atol=1e-4)


def test_v1_model_file_loads_and_predicts_identically():
    model = fastdrop.load_model(os.path.join(HERE, "model_v1.fdm"))
    _, x = golden_models.saved_model()
    want = np.load(os.path.join(HERE, "model_v1_pred.npy"))
    got = model.predict(x)
    if SAME_KERNELS:
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and it keeps training from its saved optimizer state
    xx, yy = golden_models.data()
    model.fit(xx, yy, epochs=1, batch_size=50, verbose=0)

"""Record the golden MLP results (tests/data/golden_mlp.npz) and a v1 model file.

Run once with the engine whose results are to be locked (it was run with the v1 MLP
engine before Engine v2 replaced it):  PYTHONPATH=. python tools/make_golden.py
"""
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import golden_models  # noqa: E402

import fastdrop  # noqa: E402

out = {}
for name in golden_models.CASES:
    params, pred = golden_models.run(name)
    out[name + "/params"] = params
    out[name + "/pred"] = pred
out["fingerprint"] = np.frombuffer(golden_models.fingerprint().encode(), np.uint8)
here = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
np.savez_compressed(os.path.join(here, "golden_mlp.npz"), **out)

# a v1 model file (format_version 1) and its predictions
model, x = golden_models.saved_model()
model.save(os.path.join(here, "model_v1.fdm"))
np.save(os.path.join(here, "model_v1_pred.npy"), model.predict(x))
print("fingerprint", golden_models.fingerprint(), fastdrop.cpu_info()["isa"])

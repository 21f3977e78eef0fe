"""Model files, weight files and data sets.

* ``native``: fastdrop's own format (``.fdm``: npz + JSON header, no pickle);
* ``keras``: Keras 3 ``.keras`` archives and legacy Keras / tf.keras ``.h5`` files, both
  ways (needs h5py: ``pip install "fastdrop-engine[keras]"``);
* ``torch``: ``load_torch_state_dict(model, state_dict)``, PyTorch weights in;
* ``formats``: ``detect_format(path)``, ``load(path)``, ``save(model, path)`` by content
  and file name.
"""
from .torch import load_torch_state_dict  # noqa: F401

__all__ = ["load_torch_state_dict"]

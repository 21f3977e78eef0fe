"""Keras model files, both ways: Keras 3 ``.keras`` archives and the legacy HDF5 ``.h5``
files of Keras 3 and tf.keras 2.

A ``.keras`` file is a zip of ``metadata.json`` (the Keras version), ``config.json``
(``serialize_keras_object`` of the model, with its ``compile_config``) and
``model.weights.h5``, where the variables of the i-th layer of ``model.layers`` sit under
``layers/<snake_case(class name)>[_k]/vars/<j>`` (an RNN's under ``.../cell/vars``, a
``Bidirectional``'s under ``forward_layer/cell/vars`` and ``backward_layer/cell/vars``)
and the optimizer's under ``optimizer/vars/<j>`` (iterations, learning rate, then the
slots).  A legacy ``.h5`` file holds the config as the ``model_config`` attribute, the
compile arguments as ``training_config``, each layer's weights under
``model_weights/<layer name>`` (listed by the ``weight_names`` attribute; tf.keras 2
names end in ``:0``) and the optimizer's under ``optimizer_weights``.

Reading (``load_keras``, ``load_h5``): a ``Sequential`` or a single-chain Functional
model of layers fastdrop has becomes a fastdrop ``Sequential`` with the same weights,
BatchNorm statistics, optimizer (hyperparameters, iterations and slots) and loss, ready to
``fit`` on and to ``predict(x, mc_samples=T)``.  The whole config is translated and checked
before anything is built; what fastdrop cannot express (a layer it does not have, a
branching graph, channels_first, a custom object, a mixed-precision policy) is a
``NotImplementedError`` or ``ValueError`` that names the file and the layer.  Archives are
read member by member in memory and HDF5 data is checked before libhdf5 parses it
(``fastdrop.io._safe``); nothing is extracted to disk.

Writing (``save_keras``, ``save_h5``): files that ``keras.models.load_model`` opens with
the same predictions and compile config.  A fastdrop-only feature (``Dense(drop_connect=)``)
is refused with a clear error.  fastdrop's own model seed and step counter ride along in
``metadata.json`` (``.h5``: a file attribute), which Keras ignores.

h5py is imported only here: ``pip install "fastdrop-engine[keras]"``.
"""
from ._common import EXTRA, to_snake_case  # noqa: F401
from .reader import load_h5, load_keras  # noqa: F401
from .writer import save_h5, save_keras  # noqa: F401

__all__ = ["load_keras", "load_h5", "save_keras", "save_h5", "to_snake_case", "EXTRA"]

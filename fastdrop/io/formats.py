"""Which model format a file is, by its content, and loading / saving by format.

* ``detect_format(path)`` -> ``'fdm'`` (fastdrop's own zip), ``'keras'`` (a Keras 3
  ``.keras`` zip) or ``'h5'`` (an HDF5 file: a legacy Keras / tf.keras model), from the
  file's first bytes and, for zips, the names of its members — never from the extension
  (fastdrop's own format may sit in a file named ``.keras``).
* ``load(path)``: the model in the file, whatever its format.
* ``save(model, path)``: by extension — ``.keras`` writes a Keras 3 archive, ``.h5`` /
  ``.hdf5`` a legacy Keras HDF5 file, every other name fastdrop's own format (``.fdm``).
"""
import os

from . import _safe

KERAS_EXTS = (".keras",)
H5_EXTS = (".h5", ".hdf5")


def _native():
    from . import native
    return native


def detect_format(path):
    """'fdm', 'keras' or 'h5' for the file at ``path`` (ValueError for anything else)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if os.path.isdir(path):
        raise _safe.bad(path, "a directory, not a model file")
    head = _safe.file_head(path)
    if not head:
        raise _safe.bad(path, "the file is empty")
    if _safe.is_zip(head):
        with _safe.Archive(path, path) as ar:
            if "__fastdrop__.npy" in ar:
                return "fdm"
            if "config.json" in ar:
                return "keras"
            raise _safe.bad(path, "a zip archive that is neither a fastdrop model (no "
                                  "__fastdrop__.npy) nor a Keras .keras file (no config.json)")
    if _safe.hdf5_offset(head) is not None:
        return "h5"
    raise _safe.bad(path, "not a model file: neither a zip archive (fastdrop .fdm, Keras "
                          ".keras) nor HDF5 (Keras .h5)")


def load(path):
    """The model saved at ``path``: fastdrop's own format, Keras ``.keras`` or ``.h5``.
    A file that is neither Keras format goes to fastdrop's own loader, whose errors say
    what is wrong with it."""
    try:
        kind = detect_format(path)
    except _safe.UnsafeFile as e:
        why = str(e)[len(repr(os.fspath(path))) + 2:]
        raise _safe.UnsafeFile(f"{os.fspath(path)!r} is not a valid fastdrop model file (nor a "
                               f"Keras one): {why}") from None
    except (ValueError, OSError):
        kind = "fdm"
    if kind == "fdm":
        return _native().load_model(path)
    from . import keras
    if kind == "keras":
        return keras.load_keras(path)
    return keras.load_h5(path)


def format_for_save(path):
    """The format ``save`` writes for this file name: 'keras', 'h5' or 'fdm'."""
    if hasattr(path, "write"):
        return "fdm"
    name = os.fspath(path).lower()
    if name.endswith(KERAS_EXTS):
        return "keras"
    if name.endswith(H5_EXTS):
        return "h5"
    if name.endswith(".onnx"):
        raise ValueError(f"{os.fspath(path)!r}: ONNX is written by "
                         "fastdrop.io.onnx.export_onnx(model, path) (or `python -m fastdrop "
                         "convert IN OUT.onnx`), not by save")
    return "fdm"


def save(model, path):
    """Save ``model`` in the format its file name asks for (see the module doc)."""
    kind = format_for_save(path)
    if kind == "fdm":
        return _native().save_model(model, path)
    from . import keras
    if kind == "keras":
        return keras.save_keras(model, path)
    return keras.save_h5(model, path)

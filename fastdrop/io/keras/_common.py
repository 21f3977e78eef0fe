"""Shared pieces of the Keras format modules (see ``fastdrop.io.keras``)."""
import re

EXTRA = 'pip install "fastdrop-engine[keras]"'
WRITE_KERAS_VERSION = "3.0.0"      # the oldest Keras whose config format we write
MAX_JSON = 256 << 20


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading or writing Keras .keras/.h5 files needs h5py: "
                          f"{EXTRA}") from None
    return h5py


class _Ctx:
    """The file being read, for error messages."""

    def __init__(self, path):
        self.path = path

    def bad(self, why):
        return ValueError(f"{self.path!r}: {why}")

    def unsupported(self, why):
        return NotImplementedError(f"{self.path!r}: {why}")


def to_snake_case(name):
    """Keras's ``naming.to_snake_case`` (the weight-file path of a layer)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# =============================================================== config translation
_IGNORED_KEYS = {"name", "trainable", "dtype", "module", "registered_name", "build_config",
                 "batch_input_shape", "batch_shape", "input_shape", "autocast",
                 "input_spec"}
_ACT_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
_INIT_NAMES = {"GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal",
               "HeUniform": "he_uniform", "HeNormal": "he_normal",
               "LecunNormal": "lecun_normal", "LecunUniform": "lecun_uniform",
               "Zeros": "zeros", "Ones": "ones", "Orthogonal": "orthogonal",
               "RandomUniform": "uniform"}
_KERAS_INIT = {v: k for k, v in _INIT_NAMES.items()}


def _class_and_config(obj):
    if isinstance(obj, dict):
        return obj.get("class_name"), obj.get("config") or {}
    return obj, {}


def _norm(v):
    """Config values compared without Keras's per-object bookkeeping."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if k not in ("shared_object_id", "name")}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


# =============================================================== model structure

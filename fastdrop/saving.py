"""Compatibility module: model files live in ``fastdrop.io.saving``."""
from .io.saving import FORMAT, FORMAT_VERSION, load_model, save_model  # noqa: F401

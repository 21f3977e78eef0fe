"""Registries that let lower floors name higher ones without importing them.

* ``LAYER_TYPES``: layer class name -> class, filled by ``fastdrop.layers`` (and by a user's
  ``register_layer``); file formats (``fastdrop.io``) build layers from configs through it.
* the model class: ``fastdrop.models`` registers ``Sequential``; ``fastdrop.io`` builds the
  models it loads through ``model_class()`` instead of importing ``fastdrop.models``.

This module imports nothing of fastdrop's; ``import fastdrop`` fills both registries.
"""
LAYER_TYPES = {}
_MODELS = {}


def register_layer(cls, name=None):
    """Make ``cls`` loadable by class name (configs, files).  Returns ``cls`` (a decorator)."""
    LAYER_TYPES[name or cls.__name__] = cls
    return cls


def layer_class(name):
    """The layer class registered under ``name`` (None if there is none)."""
    return LAYER_TYPES.get(name)


def register_model(cls, name=None):
    _MODELS[name or cls.__name__] = cls
    return cls


def model_class(name="Sequential"):
    """The model class registered under ``name`` (``Sequential`` by default)."""
    try:
        return _MODELS[name]
    except KeyError:
        raise LookupError(f"no model class {name!r} is registered (importing fastdrop "
                          f"registers Sequential)") from None

"""fastdrop — fast CPU training and inference of dropout neural networks.

C kernels (SGEMM, ReLU, softmax cross-entropy, dropout with a counter-keyed xoshiro256+
generator) with AVX2/AVX-512 paths chosen at run time and OpenMP threads, behind a
Keras-like API.
"""
from ._version import __version__


def _missing_extension_error():
    import importlib.util
    import os
    if importlib.util.find_spec(__name__ + "._core") is not None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    return ImportError(
        f"fastdrop's compiled extension (fastdrop._core) is missing in {here}: this "
        f"looks like a source checkout that was never built. Build it in place with "
        f"`pip install -e .` (or `python setup.py build_ext --inplace`) in "
        f"{os.path.dirname(here)}, or run Python from another directory to use an "
        f"installed fastdrop-engine.", name="fastdrop._core", path=here)


try:
    from . import _core
except ImportError:
    _err = _missing_extension_error()
    if _err is not None:
        raise _err from None
    raise
from . import kernels
from . import config, mixed_precision
from . import (callbacks, constraints, datasets, initializers, layers, losses, models,
               optimizers, regularizers, utils)
from .layers import Activation, Dense, Dropout, Flatten, Input, ReLU
from .models import Sequential, load_model
from .random import set_seed
from .runtime import (cpu_info, get_flush_denormals, get_num_threads,  # noqa: F401
                      set_flush_denormals, set_num_threads)

__all__ = [
    "__version__", "kernels", "set_num_threads", "get_num_threads", "cpu_info", "set_seed",
    "set_flush_denormals", "get_flush_denormals",
    "Sequential", "load_model", "Dense", "Dropout", "Activation", "ReLU", "Flatten", "Input",
    "config", "mixed_precision", "callbacks", "constraints", "datasets", "initializers", "layers", "losses", "models",
    "optimizers", "regularizers", "utils",
]


def _check_env():
    import os
    want = os.environ.get("FASTDROP_ISA")
    if want in ("avx512bf16", "amx") and _core.bf16_path() != want:
        import warnings
        warnings.warn(f"FASTDROP_ISA={want!r}: this CPU, OS or build cannot run that bf16 "
                      f"path (supported: {_core.bf16_paths_supported()}); bf16 GEMMs use "
                      f"{_core.bf16_path()!r}", RuntimeWarning, stacklevel=3)
    err = _core.isa_env_error()
    if err:
        import os
        import warnings
        warnings.warn(f"{err} (FASTDROP_ISA={os.environ.get('FASTDROP_ISA')!r}); "
                      f"using {_core.isa()!r}", RuntimeWarning, stacklevel=3)


_check_env()

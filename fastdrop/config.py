"""Global settings with ``keras.config``'s names: the dtype policy
(``set_dtype_policy`` / ``dtype_policy``, the same as ``fastdrop.mixed_precision``'s
``set_global_policy`` / ``global_policy``)."""
from .mixed_precision import dtype_policy, set_dtype_policy

__all__ = ["set_dtype_policy", "dtype_policy"]

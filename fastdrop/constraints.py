"""Weight constraints applied after every update (Keras semantics)."""
import math
import numbers


class Constraint:
    def get_config(self):
        return {}


class MaxNorm(Constraint):
    """Clip the L2 norm of each unit's incoming weights (each column of a Dense kernel
    (in, out)) to at most ``max_value`` — the constraint the dropout paper pairs with
    dropout.  ``axis=0`` as in Keras."""

    def __init__(self, max_value=2, axis=0):
        if isinstance(max_value, bool) or not isinstance(max_value, numbers.Real) \
                or not math.isfinite(max_value) or max_value <= 0:
            raise ValueError(f"max_value must be a finite number > 0, got {max_value!r}")
        if axis != 0:
            raise ValueError("axis must be 0 (per-unit incoming weights of a Dense kernel)")
        self.max_value = float(max_value)
        self.axis = 0

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}

    def __repr__(self):
        return f"MaxNorm(max_value={self.max_value})"


max_norm = MaxNorm


def get(obj):
    if obj is None or isinstance(obj, Constraint):
        return obj
    if isinstance(obj, dict):
        return MaxNorm(**obj)
    if obj in ("max_norm", "maxnorm", "MaxNorm"):
        return MaxNorm()
    raise ValueError(f"kernel_constraint must be a fastdrop.constraints object or None, "
                     f"got {obj!r}")


def serialize(obj):
    """The config of a constraint (None for None), as ``get`` accepts it back."""
    return None if obj is None else obj.get_config()

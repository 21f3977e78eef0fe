"""Dtype policies, with Keras's names and semantics (``keras.mixed_precision``).

``"float32"``: everything in float32 (the default).  ``"mixed_bfloat16"``: variables
(master weights), optimizer slots, BatchNorm moving statistics, the loss and its reduction
stay float32; the GEMM operands of the layer (Dense: forward, dX and dW) are rounded to
bfloat16 (round to nearest even) with float32 accumulation, on the CPU's AMX-BF16 or
AVX512-BF16 units when it has them and through a portable path otherwise
(``fastdrop.cpu_info()["bf16"]``).  Layers whose bf16 kernels are not written yet
(convolution, recurrent) carry the policy and compute in float32.  ``predict`` returns
float32 (Keras would return bfloat16 unless the last layer is float32).

    fastdrop.mixed_precision.set_global_policy("mixed_bfloat16")
    model = Sequential([Dense(1024, activation="relu"), ...])   # layers take the policy
    Dense(10, dtype="float32")                                  # or a per-layer policy

A layer takes the global policy when it is made (as in Keras), so set it before building
the model.
"""
import threading

__all__ = ["DTypePolicy", "Policy", "set_global_policy", "global_policy", "dtype_policy",
           "set_dtype_policy"]

_POLICIES = {
    # name: (compute dtype, variable dtype)
    "float32": ("float32", "float32"),
    "mixed_bfloat16": ("bfloat16", "float32"),
}
_REFUSED = {
    "mixed_float16": "fastdrop has no float16 kernels; use 'mixed_bfloat16'",
    "float16": "fastdrop has no float16 kernels; use 'mixed_bfloat16'",
    "bfloat16": "fastdrop keeps variables in float32; use 'mixed_bfloat16' (bf16 compute, "
                "float32 variables)",
    "float64": "fastdrop computes in float32; use 'float32'",
}


class DTypePolicy:
    """A dtype policy: ``name`` ('float32' or 'mixed_bfloat16'), ``compute_dtype`` (the
    dtype of the layer's computations: 'float32' or 'bfloat16') and ``variable_dtype``
    (always 'float32').  ``DTypePolicy()`` is the current global policy's name, as in
    Keras."""

    __slots__ = ("_name",)

    def __init__(self, name=None):
        if name is None:
            name = global_policy().name
        if isinstance(name, DTypePolicy):
            name = name.name
        if not isinstance(name, str):
            raise TypeError(f"dtype policy name must be a string, got {type(name).__name__}")
        if name not in _POLICIES:
            why = _REFUSED.get(name)
            if why:
                raise ValueError(f"dtype policy {name!r} is not supported: {why}")
            raise ValueError(f"dtype policy must be one of {sorted(_POLICIES)}, got {name!r}")
        self._name = name

    @property
    def name(self):
        return self._name

    @property
    def compute_dtype(self):
        return _POLICIES[self._name][0]

    @property
    def variable_dtype(self):
        return _POLICIES[self._name][1]

    @property
    def is_mixed(self):
        return self.compute_dtype != self.variable_dtype

    def get_config(self):
        return {"name": self._name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and other._name == self._name

    def __hash__(self):
        return hash(self._name)

    def __repr__(self):
        return f'<DTypePolicy "{self._name}">'


Policy = DTypePolicy  # Keras 2 name

_lock = threading.Lock()
_global = None  # None: float32


def get(value, arg="dtype"):
    """A DTypePolicy from what a ``dtype=`` argument or a config holds: None (the global
    policy), a name, a DTypePolicy, or a Keras-serialized policy dict
    ``{"class_name": "DTypePolicy", "config": {"name": ...}}``."""
    if value is None:
        return global_policy()
    if isinstance(value, DTypePolicy):
        return value
    if isinstance(value, dict):
        cls = value.get("class_name", "DTypePolicy")
        cfg = value.get("config")
        if cls not in ("DTypePolicy", "Policy", "FloatDTypePolicy") or \
                not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
            raise ValueError(f"{arg} must be a dtype policy name, a DTypePolicy or a "
                             f"serialized DTypePolicy, got {value!r}")
        value = cfg["name"]
    if isinstance(value, str):
        try:
            return DTypePolicy(value)
        except ValueError as e:
            raise ValueError(f"{arg}: {e}") from None
    raise ValueError(f"{arg} must be a dtype policy name ('float32', 'mixed_bfloat16'), a "
                     f"DTypePolicy or None, got {value!r}")


def set_global_policy(policy):
    """Set the policy new layers take (a name, a DTypePolicy, or None for 'float32')."""
    global _global
    p = DTypePolicy("float32") if policy is None else get(policy, "policy")
    with _lock:
        _global = p


def global_policy():
    """The policy new layers take (DTypePolicy; 'float32' unless set)."""
    p = _global
    return p if p is not None else _FLOAT32


_FLOAT32 = DTypePolicy("float32")

# keras.config spellings
set_dtype_policy = set_global_policy
dtype_policy = global_policy

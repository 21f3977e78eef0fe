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
import datetime
import io
import json
import math
import numbers
import os
import re
import tempfile
import warnings
import zipfile

import numpy as np

from . import _safe

EXTRA = 'pip install "fastdrop-engine[keras]"'
WRITE_KERAS_VERSION = "3.0.0"      # the oldest Keras whose config format we write
_MAX_JSON = 256 << 20


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


class _Layer:
    """One Keras layer, translated: fastdrop layer objects and where its weights sit."""

    def __init__(self, kclass, kname, layers, weights):
        self.kclass = kclass
        self.kname = kname
        self.layers = layers          # fastdrop layers (the first one owns the weights)
        self.weights = weights        # [(subpath, index, leaf, direction)] in fastdrop order


class _Translator:
    def __init__(self, ctx, keras_version):
        self.ctx = ctx
        self.keras_version = keras_version

    # ------------------------------------------------------------------ helpers
    def where(self, kclass, kname):
        return f"layer {kname!r} ({kclass})"

    def dtype(self, cfg, where, allow_int=False):
        d = cfg.get("dtype")
        if d is None:
            return None
        name = d
        if isinstance(d, dict):
            cls = d.get("class_name")
            name = (d.get("config") or {}).get("name")
            if cls not in ("DTypePolicy", "Policy", "FloatDTypePolicy", None):
                raise self.ctx.unsupported(f"{where} uses the dtype policy {cls!r}; fastdrop "
                                           "runs float32 only")
        if not isinstance(name, str):
            raise self.ctx.bad(f"{where} has a malformed dtype {d!r}")
        if name == "float32":
            return name
        if name.startswith("mixed_"):
            raise self.ctx.unsupported(
                f"{where} uses the mixed-precision policy {name!r}; fastdrop does not run "
                "mixed precision yet (float32 only): set the policy to 'float32' in Keras "
                "before saving")
        if allow_int and re.fullmatch(r"u?int(8|16|32|64)|float(16|64)|bfloat16|bool", name):
            return name
        raise self.ctx.unsupported(f"{where} computes in {name!r}; fastdrop runs float32 only")

    def activation(self, value, where, arg="activation", allowed=None):
        if value is None:
            return "linear"
        if isinstance(value, dict):
            cls, cfg = _class_and_config(value)
            if cls == "function" or isinstance(cfg, str):
                value = cfg if isinstance(cfg, str) else None
            if not isinstance(value, str):
                raise self.ctx.unsupported(f"{where}: {arg} {value!r} is a custom object, "
                                           "which fastdrop cannot load")
        if not isinstance(value, str):
            raise self.ctx.bad(f"{where}: malformed {arg} {value!r}")
        from ..engine import activations as _acts
        names = allowed if allowed is not None else _acts.names()
        v = value.lower()
        if v not in names and _ACT_ALIASES.get(v) in names:
            v = _ACT_ALIASES[v]
        if v not in names:
            raise self.ctx.unsupported(f"{where}: {arg} {value!r} is not available in "
                                       f"fastdrop (it has {sorted(names)})")
        return v

    def initializer(self, value, where, arg, default):
        if value is None:
            return default
        cls, cfg = _class_and_config(value)
        if isinstance(cls, str) and cls in _INIT_NAMES.values():
            return cls
        name = _INIT_NAMES.get(cls)
        ok = name is not None
        if cls == "Orthogonal" and float(cfg.get("gain", 1.0)) != 1.0:
            ok = False
        if cls == "RandomUniform" and (float(cfg.get("minval", -0.05)) != -0.05 or
                                       float(cfg.get("maxval", 0.05)) != 0.05):
            ok = False
        if not ok:
            warnings.warn(f"{self.ctx.path!r}: {where}: {arg} {cls!r} {cfg} has no fastdrop "
                          f"equivalent; the loaded weights are used as they are, and "
                          f"{default!r} would initialise fresh ones", stacklevel=4)
            return default
        return name

    def regularizer(self, value, where, arg):
        if value is None:
            return None
        cls, cfg = _class_and_config(value)
        if isinstance(cls, str) and cls.lower() in ("l1", "l2", "l1_l2", "l1l2") and not cfg:
            from .. import regularizers
            return regularizers.get({"l1": "l1", "l2": "l2"}.get(cls.lower(), "l1_l2"))
        if cls in ("L1", "L2", "L1L2", "l1_l2"):
            from .. import regularizers
            return regularizers.Regularizer(l1=float(cfg.get("l1", 0.0) or 0.0),
                                            l2=float(cfg.get("l2", 0.0) or 0.0))
        raise self.ctx.unsupported(f"{where}: {arg} {cls!r} is not available in fastdrop "
                                   "(it has L1, L2 and L1L2)")

    def constraint(self, value, where, arg, rank):
        if value is None:
            return None
        cls, cfg = _class_and_config(value)
        if cls in ("MaxNorm", "max_norm", "maxnorm"):
            axis = cfg.get("axis", 0)
            axes = sorted(axis) if isinstance(axis, (list, tuple)) else [axis]
            want = list(range(rank - 1))
            if axes != want and not (rank == 2 and axes == [0]):
                raise self.ctx.unsupported(f"{where}: {arg} MaxNorm(axis={axis}) is not "
                                           f"available in fastdrop (only axis={want})")
            from .. import constraints
            return constraints.MaxNorm(max_value=cfg.get("max_value", 2))
        raise self.ctx.unsupported(f"{where}: {arg} {cls!r} is not available in fastdrop "
                                   "(it has MaxNorm)")

    def check_keys(self, cfg, handled, where, defaults=None):
        """Refuse a setting fastdrop does not implement; ``defaults``: keys accepted only
        with these values."""
        defaults = defaults or {}
        for k, v in cfg.items():
            if k in handled or k in _IGNORED_KEYS:
                continue
            if k in defaults:
                ok = defaults[k]
                if callable(ok):
                    good = ok(v)
                else:
                    good = v in (ok if isinstance(ok, tuple) else (ok,))
                if good:
                    continue
                raise self.ctx.unsupported(f"{where}: {k}={v!r} is not supported by fastdrop")
            if v is None or v is False or v == {} or v == []:
                continue            # a setting of a newer Keras, off
            raise self.ctx.unsupported(f"{where}: the setting {k}={v!r} is not supported by "
                                       "fastdrop")

    @staticmethod
    def _pair(v):
        return list(v) if isinstance(v, (list, tuple)) else [v, v]

    def _data_format(self, v):
        return v in (None, "channels_last")

    # ------------------------------------------------------------------ layers
    def layer(self, spec, index):
        from .. import layers as L
        if not isinstance(spec, dict) or not isinstance(spec.get("class_name"), str):
            raise self.ctx.bad(f"layer entry {index} of the config is malformed")
        kclass = spec["class_name"]
        cfg = spec.get("config")
        if not isinstance(cfg, dict):
            raise self.ctx.bad(f"layer entry {index} ({kclass}) has no config")
        kname = cfg.get("name")
        if not isinstance(kname, str) or not kname:
            raise self.ctx.bad(f"layer entry {index} ({kclass}) has no name")
        where = self.where(kclass, kname)
        if spec.get("registered_name") not in (None, kclass) or \
                (isinstance(spec.get("module"), str)
                 and not spec["module"].startswith(("keras", "tf_keras", "tensorflow"))):
            raise self.ctx.unsupported(f"{where} is a custom object "
                                       f"({spec.get('module')}>{spec.get('registered_name')}); "
                                       "fastdrop loads built-in Keras layers only")
        if "data_format" in cfg and not self._data_format(cfg["data_format"]):
            raise self.ctx.unsupported(f"{where}: data_format={cfg['data_format']!r} is not "
                                       "supported; fastdrop is channels-last (NHWC) only")
        fn = getattr(self, "layer_" + kclass, None)
        if fn is None:
            if kclass in ("Sequential", "Functional", "Model"):
                raise self.ctx.unsupported(f"{where} is a nested model; fastdrop loads one "
                                           "flat Sequential or chain Functional model")
            raise self.ctx.unsupported(f"{where}: fastdrop has no {kclass} layer (it has "
                                       f"{sorted(k for k in L.LAYER_TYPES if k != 'InputLayer')})")
        self.dtype(cfg, where, allow_int=kclass == "InputLayer")
        common = {"name": kname, "trainable": bool(cfg.get("trainable", True))}
        out = fn(cfg, where, common)
        return out if isinstance(out, _Layer) else _Layer(kclass, kname, out[0], out[1])

    def input_shape_of(self, cfg, input_dim=False):
        """Per-sample shape from batch_shape / batch_input_shape (None if absent)."""
        for key in ("batch_shape", "batch_input_shape"):
            s = cfg.get(key)
            if s is not None:
                return self._shape(s[1:], key)
        s = cfg.get("input_shape")
        if s is not None:
            return self._shape(s, "input_shape")
        if input_dim and cfg.get("input_dim") is not None:
            return self._shape([cfg["input_dim"]], "input_dim")
        return None

    def _shape(self, s, key):
        if not isinstance(s, (list, tuple)) or not s:
            raise self.ctx.bad(f"malformed {key} {s!r}")
        out = []
        for d in s:
            if d is None:
                out.append(None)
            elif isinstance(d, bool) or not isinstance(d, int) or d <= 0 or d > (1 << 31):
                raise self.ctx.bad(f"malformed {key} {s!r}")
            else:
                out.append(d)
        return tuple(out)

    def layer_InputLayer(self, cfg, where, common):
        from ..layers import InputLayer
        self.check_keys(cfg, {"optional"}, where, {"sparse": (False, None),
                                                    "ragged": (False, None)})
        shape = self.input_shape_of(cfg)
        if shape is None:
            raise self.ctx.bad(f"{where} has no shape")
        return [InputLayer(shape=shape, name=common["name"])], []

    def layer_Dense(self, cfg, where, common):
        from ..layers import Dense
        self.check_keys(cfg, {"units", "activation", "use_bias", "kernel_initializer",
                              "bias_initializer", "kernel_regularizer", "bias_regularizer",
                              "kernel_constraint", "bias_constraint", "input_dim"}, where,
                        {"activity_regularizer": None, "lora_rank": (None, 0),
                         "lora_alpha": lambda v: True, "quantization_config": None})
        use_bias = bool(cfg.get("use_bias", True))
        layer = Dense(
            int(cfg["units"]), activation=self.activation(cfg.get("activation"), where),
            use_bias=use_bias,
            kernel_initializer=self.initializer(cfg.get("kernel_initializer"), where,
                                                "kernel_initializer", "glorot_uniform"),
            bias_initializer=self.initializer(cfg.get("bias_initializer"), where,
                                              "bias_initializer", "zeros"),
            kernel_regularizer=self.regularizer(cfg.get("kernel_regularizer"), where,
                                                "kernel_regularizer"),
            bias_regularizer=self.regularizer(cfg.get("bias_regularizer"), where,
                                              "bias_regularizer"),
            kernel_constraint=self.constraint(cfg.get("kernel_constraint"), where,
                                              "kernel_constraint", 2),
            bias_constraint=self.constraint(cfg.get("bias_constraint"), where,
                                            "bias_constraint", 2),
            input_shape=self._declared(cfg, input_dim=True), **common)
        w = [("", 0, "kernel", None)] + ([("", 1, "bias", None)] if use_bias else [])
        return [layer], w

    def _declared(self, cfg, input_dim=False):
        """The input shape a (tf.keras 2) layer config declares, or None."""
        return self.input_shape_of(cfg, input_dim)

    def layer_Activation(self, cfg, where, common):
        from ..layers import Activation
        self.check_keys(cfg, {"activation"}, where)
        return [Activation(self.activation(cfg.get("activation"), where),
                           input_shape=self._declared(cfg), **common)], []

    def layer_ReLU(self, cfg, where, common):
        from ..layers import ReLU
        self.check_keys(cfg, set(), where, {"max_value": (None,), "negative_slope": (0, 0.0),
                                            "threshold": (0, 0.0)})
        return [ReLU(input_shape=self._declared(cfg), **common)], []

    def _noise(self, cls, cfg, where, common, extra=None):
        self.check_keys(cfg, {"rate", "seed"} | set(extra or {}), where,
                        {"noise_shape": None} if not extra else None)
        kw = dict(rate=float(cfg["rate"]), seed=cfg.get("seed"), **common)
        for k in extra or ():
            kw[k] = cfg.get(k)
        decl = self._declared(cfg)
        if decl is not None:
            kw["input_shape"] = decl
        return [cls(**kw)], []

    def layer_Dropout(self, cfg, where, common):
        from ..layers import Dropout
        return self._noise(Dropout, cfg, where, common, extra=("noise_shape",))

    def layer_GaussianDropout(self, cfg, where, common):
        from ..layers import GaussianDropout
        return self._noise(GaussianDropout, cfg, where, common)

    def layer_AlphaDropout(self, cfg, where, common):
        from ..layers import AlphaDropout
        return self._noise(AlphaDropout, cfg, where, common)

    def layer_SpatialDropout2D(self, cfg, where, common):
        from ..layers import SpatialDropout2D
        self.check_keys(cfg, {"rate", "seed", "data_format"}, where)
        return [SpatialDropout2D(rate=float(cfg["rate"]), seed=cfg.get("seed"),
                                 input_shape=self._declared(cfg), **common)], []

    def layer_Flatten(self, cfg, where, common):
        from ..layers import Flatten
        self.check_keys(cfg, {"data_format"}, where)
        return [Flatten(input_shape=self._declared(cfg), **common)], []

    def layer_Reshape(self, cfg, where, common):
        from ..layers import Reshape
        self.check_keys(cfg, {"target_shape"}, where)
        return [Reshape(tuple(cfg["target_shape"]), input_shape=self._declared(cfg),
                        **common)], []

    def layer_Conv2D(self, cfg, where, common):
        from ..layers import Activation, Conv2D
        self.check_keys(cfg, {"filters", "kernel_size", "strides", "padding", "data_format",
                              "dilation_rate", "activation", "use_bias", "kernel_initializer",
                              "bias_initializer", "kernel_regularizer", "kernel_constraint"},
                        where, {"groups": (1, None), "activity_regularizer": None,
                                "bias_regularizer": None, "bias_constraint": None,
                                "lora_rank": (None, 0), "lora_alpha": lambda v: True})
        act = self.activation(cfg.get("activation"), where)
        use_bias = bool(cfg.get("use_bias", True))
        kw = dict(filters=int(cfg["filters"]), kernel_size=self._pair(cfg["kernel_size"]),
                  strides=self._pair(cfg.get("strides", 1)),
                  padding=cfg.get("padding", "valid"),
                  dilation_rate=self._pair(cfg.get("dilation_rate", 1)), use_bias=use_bias,
                  kernel_initializer=self.initializer(cfg.get("kernel_initializer"), where,
                                                      "kernel_initializer", "glorot_uniform"),
                  bias_initializer=self.initializer(cfg.get("bias_initializer"), where,
                                                    "bias_initializer", "zeros"),
                  kernel_regularizer=self.regularizer(cfg.get("kernel_regularizer"), where,
                                                      "kernel_regularizer"),
                  kernel_constraint=self.constraint(cfg.get("kernel_constraint"), where,
                                                    "kernel_constraint", 4),
                  input_shape=self._declared(cfg), **common)
        if kw["padding"] not in ("valid", "same"):
            raise self.ctx.unsupported(f"{where}: padding={kw['padding']!r} is not supported")
        w = [("", 0, "kernel", None)] + ([("", 1, "bias", None)] if use_bias else [])
        try:
            return [Conv2D(activation=act, **kw)], w
        except ValueError as e:
            if "activation" not in str(e):
                raise
        # an activation the convolution does not fuse: the same function as a layer after it
        conv = Conv2D(activation=None, **kw)
        return [conv, Activation(act, name=common["name"] + "__activation")], w

    def _pool(self, cls, cfg, where, common):
        self.check_keys(cfg, {"pool_size", "strides", "padding", "data_format"}, where)
        strides = cfg.get("strides")
        if cfg.get("padding", "valid") not in ("valid", "same"):
            raise self.ctx.unsupported(f"{where}: padding={cfg.get('padding')!r}")
        return [cls(pool_size=self._pair(cfg.get("pool_size", 2)),
                    strides=None if strides is None else self._pair(strides),
                    padding=cfg.get("padding", "valid"), input_shape=self._declared(cfg),
                    **common)], []

    def layer_MaxPooling2D(self, cfg, where, common):
        from ..layers import MaxPooling2D
        return self._pool(MaxPooling2D, cfg, where, common)

    def layer_AveragePooling2D(self, cfg, where, common):
        from ..layers import AveragePooling2D
        return self._pool(AveragePooling2D, cfg, where, common)

    def _global(self, cls, cfg, where, common):
        self.check_keys(cfg, {"data_format", "keepdims"}, where)
        return [cls(keepdims=bool(cfg.get("keepdims", False)),
                    input_shape=self._declared(cfg), **common)], []

    def layer_GlobalAveragePooling2D(self, cfg, where, common):
        from ..layers import GlobalAveragePooling2D
        return self._global(GlobalAveragePooling2D, cfg, where, common)

    def layer_GlobalMaxPooling2D(self, cfg, where, common):
        from ..layers import GlobalMaxPooling2D
        return self._global(GlobalMaxPooling2D, cfg, where, common)

    def layer_GlobalAveragePooling1D(self, cfg, where, common):
        from ..layers import GlobalAveragePooling1D
        return self._global(GlobalAveragePooling1D, cfg, where, common)

    def layer_GlobalMaxPooling1D(self, cfg, where, common):
        from ..layers import GlobalMaxPooling1D
        return self._global(GlobalMaxPooling1D, cfg, where, common)

    def layer_BatchNormalization(self, cfg, where, common):
        from ..layers import BatchNormalization
        self.check_keys(cfg, {"axis", "momentum", "epsilon", "center", "scale",
                              "beta_initializer", "gamma_initializer",
                              "moving_mean_initializer", "moving_variance_initializer"},
                        where, {"beta_regularizer": None, "gamma_regularizer": None,
                                "beta_constraint": None, "gamma_constraint": None,
                                "synchronized": (False, None), "renorm": (False, None),
                                "renorm_clipping": lambda v: True,
                                "renorm_momentum": lambda v: True, "fused": lambda v: True,
                                "virtual_batch_size": None, "adjustment": None})
        axis = cfg.get("axis", -1)
        if isinstance(axis, list):
            if len(axis) != 1:
                raise self.ctx.unsupported(f"{where}: normalising over axes {axis}")
            axis = axis[0]
        center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
        ini = {k: self.initializer(cfg.get(k), where, k, d) for k, d in (
            ("beta_initializer", "zeros"), ("gamma_initializer", "ones"),
            ("moving_mean_initializer", "zeros"), ("moving_variance_initializer", "ones"))}
        layer = BatchNormalization(axis=int(axis), momentum=float(cfg.get("momentum", 0.99)),
                                   epsilon=float(cfg.get("epsilon", 1e-3)), center=center,
                                   scale=scale, input_shape=self._declared(cfg), **ini,
                                   **common)
        names = (["gamma"] if scale else []) + (["beta"] if center else []) + \
            ["moving_mean", "moving_variance"]
        return [layer], [("", i, n, None) for i, n in enumerate(names)]

    def layer_Embedding(self, cfg, where, common):
        from ..layers import Embedding
        self.check_keys(cfg, {"input_dim", "output_dim", "embeddings_initializer",
                              "embeddings_regularizer", "embeddings_constraint", "mask_zero",
                              "input_length"}, where,
                        {"activity_regularizer": None, "sparse": (False, None),
                         "lora_rank": (None, 0), "lora_alpha": lambda v: True,
                         "quantization_config": None})
        layer = Embedding(int(cfg["input_dim"]), int(cfg["output_dim"]),
                          embeddings_initializer=self.initializer(
                              cfg.get("embeddings_initializer"), where,
                              "embeddings_initializer", "uniform"),
                          embeddings_regularizer=self.regularizer(
                              cfg.get("embeddings_regularizer"), where,
                              "embeddings_regularizer"),
                          embeddings_constraint=self.constraint(
                              cfg.get("embeddings_constraint"), where,
                              "embeddings_constraint", 2),
                          mask_zero=bool(cfg.get("mask_zero", False)),
                          input_length=cfg.get("input_length"),
                          input_shape=self._declared(cfg), **common)
        return [layer], [("", 0, "embeddings", None)]

    _RNN_KEYS = {"units", "activation", "recurrent_activation", "use_bias",
                 "kernel_initializer", "recurrent_initializer", "bias_initializer",
                 "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                 "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
                 "recurrent_dropout", "seed", "return_sequences", "go_backwards", "unroll",
                 "unit_forget_bias", "reset_after", "zero_output_for_mask"}

    def rnn(self, kclass, cfg, where, common, in_bidirectional=False):
        from ..layers import GRU, LSTM, SimpleRNN
        from ..layers.recurrent import _ACTS
        cls = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}[kclass]
        self.check_keys(cfg, self._RNN_KEYS, where,
                        {"return_state": (False, None), "stateful": (False, None),
                         "activity_regularizer": None, "time_major": (False, None),
                         "implementation": lambda v: True, "use_cudnn": lambda v: True,
                         "cell": lambda v: True})
        if cfg.get("zero_output_for_mask") and cfg.get("return_sequences") \
                and not in_bidirectional:
            raise self.ctx.unsupported(f"{where}: zero_output_for_mask=True is not supported "
                                       "(fastdrop carries the previous output over masked "
                                       "steps, as Keras does by default)")
        kw = dict(
            units=int(cfg["units"]),
            activation=self.activation(cfg.get("activation", "tanh"), where,
                                       allowed=_ACTS),
            use_bias=bool(cfg.get("use_bias", True)),
            kernel_initializer=self.initializer(cfg.get("kernel_initializer"), where,
                                                "kernel_initializer", "glorot_uniform"),
            recurrent_initializer=self.initializer(cfg.get("recurrent_initializer"), where,
                                                   "recurrent_initializer", "orthogonal"),
            bias_initializer=self.initializer(cfg.get("bias_initializer"), where,
                                              "bias_initializer", "zeros"),
            kernel_regularizer=self.regularizer(cfg.get("kernel_regularizer"), where,
                                                "kernel_regularizer"),
            recurrent_regularizer=self.regularizer(cfg.get("recurrent_regularizer"), where,
                                                   "recurrent_regularizer"),
            bias_regularizer=self.regularizer(cfg.get("bias_regularizer"), where,
                                              "bias_regularizer"),
            kernel_constraint=self.constraint(cfg.get("kernel_constraint"), where,
                                              "kernel_constraint", 2),
            recurrent_constraint=self.constraint(cfg.get("recurrent_constraint"), where,
                                                 "recurrent_constraint", 2),
            bias_constraint=self.constraint(cfg.get("bias_constraint"), where,
                                            "bias_constraint", 2),
            dropout=float(cfg.get("dropout", 0.0)),
            recurrent_dropout=float(cfg.get("recurrent_dropout", 0.0)),
            seed=cfg.get("seed"), return_sequences=bool(cfg.get("return_sequences", False)),
            go_backwards=bool(cfg.get("go_backwards", False)),
            input_shape=self._declared(cfg), **common)
        if kclass != "SimpleRNN":
            kw["recurrent_activation"] = self.activation(
                cfg.get("recurrent_activation", "sigmoid"), where,
                arg="recurrent_activation", allowed=_ACTS)
        if kclass == "LSTM":
            kw["unit_forget_bias"] = bool(cfg.get("unit_forget_bias", True))
        if kclass == "GRU":
            kw["reset_after"] = bool(cfg.get("reset_after", True))
        layer = cls(**kw)
        names = ["kernel", "recurrent_kernel"] + (["bias"] if kw["use_bias"] else [])
        return layer, names

    def layer_SimpleRNN(self, cfg, where, common):
        layer, names = self.rnn("SimpleRNN", cfg, where, common)
        return [layer], [("cell", i, n, None) for i, n in enumerate(names)]

    def layer_LSTM(self, cfg, where, common):
        layer, names = self.rnn("LSTM", cfg, where, common)
        return [layer], [("cell", i, n, None) for i, n in enumerate(names)]

    def layer_GRU(self, cfg, where, common):
        layer, names = self.rnn("GRU", cfg, where, common)
        return [layer], [("cell", i, n, None) for i, n in enumerate(names)]

    def layer_Bidirectional(self, cfg, where, common):
        from ..layers import Bidirectional
        self.check_keys(cfg, {"layer", "merge_mode", "backward_layer"}, where,
                        {"weights": None})
        inner = cfg.get("layer")
        if not isinstance(inner, dict) or inner.get("class_name") not in \
                ("SimpleRNN", "LSTM", "GRU"):
            raise self.ctx.unsupported(f"{where} wraps "
                                       f"{inner.get('class_name') if isinstance(inner, dict) else inner!r}"
                                       "; fastdrop's Bidirectional wraps SimpleRNN, LSTM or GRU")
        icfg = dict(inner.get("config") or {})
        iname = icfg.get("name") or "rnn"
        iwhere = self.where(inner["class_name"], iname)
        self.dtype(icfg, iwhere)
        merge = cfg.get("merge_mode", "concat")
        if merge not in ("concat", "sum", "ave", "mul"):
            raise self.ctx.unsupported(f"{where}: merge_mode={merge!r} is not supported")
        fwd_cfg = dict(icfg)
        back = cfg.get("backward_layer")
        if back is not None:
            if not isinstance(back, dict) or back.get("class_name") != inner["class_name"]:
                raise self.ctx.unsupported(f"{where}: a backward_layer of another kind than "
                                           "the forward layer is not supported")
            bcfg = dict(back.get("config") or {})
            diff = {k for k in set(bcfg) | set(fwd_cfg)
                    if k not in ("name", "go_backwards", "trainable") and
                    _norm(bcfg.get(k)) != _norm(fwd_cfg.get(k))}
            if bool(bcfg.get("go_backwards")) == bool(fwd_cfg.get("go_backwards")) or diff:
                raise self.ctx.unsupported(
                    f"{where}: its backward_layer is not a go_backwards copy of its layer "
                    f"(differs in {sorted(diff) or ['go_backwards']}); fastdrop builds the "
                    "backward layer as that copy")
        # the inner name Keras gives is forward_<name>; fastdrop prefixes forward_ itself
        base = iname[len("forward_"):] if iname.startswith("forward_") else iname
        fwd_cfg["name"] = base
        layer, names = self.rnn(inner["class_name"], fwd_cfg, iwhere,
                                {"name": base, "trainable": bool(icfg.get("trainable", True))},
                                in_bidirectional=True)
        bl = Bidirectional(layer, merge_mode=merge, input_shape=self._declared(cfg), **common)
        w = [("forward_layer/cell", i, n, "forward") for i, n in enumerate(names)] + \
            [("backward_layer/cell", i, n, "backward") for i, n in enumerate(names)]
        return [bl], w


def _norm(v):
    """Config values compared without Keras's per-object bookkeeping."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if k not in ("shared_object_id", "name")}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


# =============================================================== model structure
def _history(arg):
    """(layer name, node index, tensor index) of one inbound tensor."""
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        h = (arg.get("config") or {}).get("keras_history")
        if isinstance(h, list) and len(h) == 3:
            return tuple(h)
    if isinstance(arg, list) and len(arg) >= 3 and isinstance(arg[0], str):
        return tuple(arg[:3])
    return None


def _chain(ctx, cfg):
    """The layer entries of a Functional config, in order, if it is one chain from one
    input to one output (else an error naming what is not)."""
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ctx.bad("the Functional config has no layers")
    ins, outs = cfg.get("input_layers"), cfg.get("output_layers")

    def endpoints(v, what):
        if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
            return [tuple(v)]
        if isinstance(v, list) and all(isinstance(x, list) and len(x) == 3 for x in v):
            return [tuple(x) for x in v]
        if isinstance(v, dict):
            return [tuple(x) for x in v.values()]
        raise ctx.bad(f"malformed {what} {v!r:.80}")
    ins, outs = endpoints(ins, "input_layers"), endpoints(outs, "output_layers")
    if len(ins) != 1:
        raise ctx.unsupported(f"the model has {len(ins)} inputs "
                              f"({[i[0] for i in ins]}); fastdrop loads single-input chains")
    if len(outs) != 1:
        raise ctx.unsupported(f"the model has {len(outs)} outputs "
                              f"({[o[0] for o in outs]}); fastdrop loads single-output chains")
    by_name = {}
    for spec in layers:
        name = spec.get("name") or (spec.get("config") or {}).get("name")
        if not isinstance(name, str) or name in by_name:
            raise ctx.bad(f"malformed or duplicate layer name {name!r} in the config")
        by_name[name] = spec
    feeds = {}
    for spec in layers:
        name = spec.get("name") or spec["config"]["name"]
        nodes = spec.get("inbound_nodes") or []
        if spec.get("class_name") == "InputLayer":
            continue
        if len(nodes) != 1:
            raise ctx.unsupported(f"layer {name!r} ({spec.get('class_name')}) is called "
                                  f"{len(nodes)} times (a shared layer); fastdrop loads chains "
                                  "where each layer is called once")
        node = nodes[0]
        if isinstance(node, dict):
            args = node.get("args") or []
            kwargs = node.get("kwargs") or {}
            flat = []
            for a in args:
                if isinstance(a, list) and a and all(_history(x) for x in a):
                    flat.extend(a)
                else:
                    flat.append(a)
            srcs = [_history(a) for a in flat]
            for k, v in kwargs.items():
                if k not in ("training", "mask") or (v is not None and not isinstance(v, bool)):
                    raise ctx.unsupported(f"layer {name!r} is called with {k}={v!r:.60}; "
                                          "fastdrop loads plain chains")
        elif isinstance(node, list):
            srcs = [_history(a) for a in node]
            for a in node:
                if isinstance(a, list) and len(a) > 3 and a[3]:
                    raise ctx.unsupported(f"layer {name!r} is called with {a[3]!r:.60}; "
                                          "fastdrop loads plain chains")
        else:
            raise ctx.bad(f"malformed inbound nodes of layer {name!r}")
        if len(srcs) != 1 or srcs[0] is None:
            raise ctx.unsupported(f"layer {name!r} ({spec.get('class_name')}) takes "
                                  f"{len(srcs)} inputs: a branching or multi-input graph; "
                                  "fastdrop loads single chains of layers")
        src = srcs[0][0]
        if src not in by_name:
            raise ctx.bad(f"layer {name!r} is fed by the unknown layer {src!r}")
        if src in feeds:
            raise ctx.unsupported(f"layer {src!r} feeds both {feeds[src]!r} and {name!r}: a "
                                  "branching graph; fastdrop loads single chains of layers")
        feeds[src] = name
    order = [ins[0][0]]
    if order[0] not in by_name or by_name[order[0]].get("class_name") != "InputLayer":
        raise ctx.bad(f"the input {order[0]!r} is not an InputLayer")
    while order[-1] in feeds:
        order.append(feeds[order[-1]])
        if len(order) > len(layers):
            raise ctx.bad("the layer graph has a cycle")
    if order[-1] != outs[0][0] or len(order) != len(layers):
        loose = sorted(set(by_name) - set(order))
        raise ctx.unsupported(f"the graph is not one chain from {order[0]!r} to "
                              f"{outs[0][0]!r} (unreached or extra layers: {loose}); "
                              "fastdrop loads single chains of layers")
    return [by_name[n] for n in order], [by_name[n] for n in
                                         [s.get("name") or s["config"]["name"] for s in layers]]


def _translate(ctx, model_cfg, keras_version):
    """(model name, [_Layer] in order, declared input shape or None, kind)."""
    if not isinstance(model_cfg, dict):
        raise ctx.bad("the model config is not a JSON object")
    kclass = model_cfg.get("class_name")
    cfg = model_cfg.get("config")
    if not isinstance(cfg, dict):
        raise ctx.bad("the model config has no 'config' object")
    if kclass not in ("Sequential", "Functional", "Model"):
        if isinstance(kclass, str):
            raise ctx.unsupported(f"the saved object is a {kclass!r}, not a Sequential or "
                                  "Functional model (subclassed models cannot be loaded)")
        raise ctx.bad("the model config has no class_name")
    if model_cfg.get("registered_name") not in (None, kclass, "Functional") or \
            (isinstance(model_cfg.get("module"), str) and
             not model_cfg["module"].startswith(("keras", "tf_keras", "tensorflow"))):
        raise ctx.unsupported(f"the model is a custom class "
                              f"({model_cfg.get('module')}>{model_cfg.get('registered_name')})")
    tr = _Translator(ctx, keras_version)
    if cfg.get("dtype") is not None:
        tr.dtype(cfg, f"the model {cfg.get('name')!r}")
    if kclass == "Sequential":
        specs = cfg.get("layers")
        if not isinstance(specs, list):
            raise ctx.bad("the Sequential config has no layers list")
        weight_order = [s for s in specs if not (isinstance(s, dict) and
                                                 s.get("class_name") == "InputLayer")]
        container = weight_order            # Sequential.layers leaves out the InputLayer
    else:
        specs, container = _chain(ctx, cfg)
    out = [tr.layer(s, i) for i, s in enumerate(specs)]
    shape = None
    bc = model_cfg.get("build_config")
    if isinstance(bc, dict) and bc.get("input_shape"):
        shape = tr._shape(bc["input_shape"][1:], "build_config input_shape")
    if cfg.get("build_input_shape"):
        shape = tr._shape(cfg["build_input_shape"][1:], "build_input_shape")
    # .keras weight paths: the snake-case class names of model.layers, made unique
    used = {}
    paths = {}
    for s in container:
        base = to_snake_case(s["class_name"])
        if base in used:
            used[base] += 1
            paths[s["config"]["name"]] = f"{base}_{used[base]}"
        else:
            used[base] = 0
            paths[s["config"]["name"]] = base
    for lay in out:
        lay.path = paths.get(lay.kname)
    return cfg.get("name") or "sequential", out, shape, kclass


def _model_class():
    try:
        from .. import registry
        return registry.model_class()
    except ImportError:           # before the layout change
        from ..models import Sequential
        return Sequential


def _build(ctx, name, plan, shape):
    """The fastdrop Sequential of the translated layers (nothing of it exists before)."""
    from ..layers import InputLayer
    Sequential = _model_class()
    layers = [fl for lay in plan for fl in lay.layers]
    if shape is not None and not (layers and isinstance(layers[0], InputLayer)) and \
            layers and layers[0].declared_input_shape is None:
        layers.insert(0, InputLayer(shape=shape, name="input_layer"))
    names = [l.name for l in layers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ctx.bad(f"duplicate layer names {sorted(dup)}")
    model = Sequential(name=str(name))
    try:
        for l in layers:
            model.add(l)
    except (ValueError, TypeError) as e:
        raise ctx.unsupported(f"the layers do not form a model fastdrop can build: {e}") \
            from None
    if not model.built:
        raise ctx.bad("the model's input shape is unknown (no InputLayer, batch_input_shape "
                      "or build_config)")
    return model


# =============================================================== weights
def _as_array(ctx, ds, what, shape):
    h5py = _h5py()
    if not isinstance(ds, h5py.Dataset):
        raise ctx.bad(f"{what} is not a dataset")
    if ds.is_virtual or ds.external:
        raise ctx.bad(f"{what} refers to data outside the file; refusing it")
    if tuple(ds.shape) != tuple(shape):
        raise ctx.bad(f"{what} has shape {tuple(ds.shape)}, the model needs {tuple(shape)}")
    if ds.dtype.kind not in "fiu":
        raise ctx.bad(f"{what} has dtype {ds.dtype}, expected numbers")
    try:
        a = np.asarray(ds[()], dtype=np.float64)
    except Exception as e:   # libhdf5 read errors on a damaged file
        raise ctx.bad(f"{what} cannot be read: {e}") from None
    if not np.isfinite(a).all():
        raise ctx.bad(f"{what} contains NaN or infinite values")
    return a


def _no_links(ctx, group, where):
    """Refuse soft/external links and dataset references to other files."""
    h5py = _h5py()
    for k in group:
        link = group.get(k, getlink=True)
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            raise ctx.bad(f"{where}/{k} is a link ({type(link).__name__}); refusing it")


def _child(ctx, group, key, where):
    h5py = _h5py()
    if key not in group:
        return None
    link = group.get(key, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise ctx.bad(f"{where}/{key} is a link ({type(link).__name__}); refusing it")
    return group[key]


def _fd_vars(model, lay):
    """The fastdrop variables of a translated layer, in Keras order (a Bidirectional's:
    its forward layer's, then its backward layer's)."""
    return list(lay.layers[0].variables)


def _fill_keras_weights(ctx, model, plan, h5):
    """Weights of a .keras archive's model.weights.h5 into the built model."""
    root = _child(ctx, h5, "layers", "")
    if root is None:
        root = _child(ctx, h5, "_layer_checkpoint_dependencies", "")
    for lay in plan:
        fvars = _fd_vars(model, lay)
        if not lay.weights:
            continue
        if len(fvars) != len(lay.weights):
            raise ctx.bad(f"layer {lay.kname!r}: {len(fvars)} variables expected, the "
                          f"translation gives {len(lay.weights)}")
        if root is None:
            raise ctx.bad("model.weights.h5 has no 'layers' group")
        g = _child(ctx, root, lay.path, "layers")
        if g is None:
            raise ctx.bad(f"model.weights.h5 has no weights for layer {lay.kname!r} "
                          f"(layers/{lay.path})")
        counts = {}
        for (sub, idx, leaf, _d), v in zip(lay.weights, fvars):
            grp = g
            where = f"layers/{lay.path}"
            for part in [p for p in sub.split("/") if p] + ["vars"]:
                grp = _child(ctx, grp, part, where)
                where += "/" + part
                if grp is None:
                    raise ctx.bad(f"model.weights.h5 has no {where} (weights of layer "
                                  f"{lay.kname!r})")
            counts.setdefault(where, (grp, set()))[1].add(str(idx))
            ds = _child(ctx, grp, str(idx), where)
            if ds is None:
                raise ctx.bad(f"model.weights.h5 has no {where}/{idx} ({leaf} of layer "
                              f"{lay.kname!r})")
            v.value[...] = _as_array(ctx, ds, f"{where}/{idx} ({leaf} of layer "
                                              f"{lay.kname!r})", v.shape)
        for where, (grp, want) in counts.items():
            extra = sorted(set(grp.keys()) - want)
            if extra:
                raise ctx.bad(f"{where} holds {len(grp.keys())} weights, layer {lay.kname!r} "
                              f"has {len(want)} (unexpected: {extra})")
    for lay in plan:
        if not lay.weights and root is not None and lay.path and lay.path in root:
            g = root[lay.path]
            vs = g.get("vars") if isinstance(g, _h5py().Group) else None
            if vs is not None and len(vs.keys()):
                raise ctx.bad(f"layers/{lay.path}/vars holds weights but layer "
                              f"{lay.kname!r} has none")


def _leaf(name):
    """'sequential/dense/kernel:0' -> ('kernel', direction)."""
    n = name[:-2] if name.endswith(":0") else name
    parts = n.split("/")
    direction = None
    for p in parts[:-1]:
        if p.startswith("forward_"):
            direction = "forward"
        elif p.startswith("backward_"):
            direction = "backward"
    return parts[-1], direction


def _attr_list(group, name):
    """A list attribute as Keras writes it (maybe chunked as name0, name1, ...)."""
    if name in group.attrs:
        raw = group.attrs[name]
        items = list(np.atleast_1d(raw)) if not isinstance(raw, (bytes, str)) else [raw]
    else:
        items = []
        k = 0
        while f"{name}{k}" in group.attrs:
            items.extend(list(np.atleast_1d(group.attrs[f"{name}{k}"])))
            k += 1
    out = []
    for x in items:
        if isinstance(x, bytes):
            x = x.decode("utf-8")
        out.append(str(x))
    return out


def _fill_h5_weights(ctx, model, plan, f):
    mw = _child(ctx, f, "model_weights", "")
    if mw is None:
        raise ctx.bad("the file has no model_weights group")
    h5py = _h5py()
    for lay in plan:
        fvars = _fd_vars(model, lay)
        g = _child(ctx, mw, lay.kname, "model_weights")
        names = _attr_list(g, "weight_names") if g is not None else []
        if not lay.weights:
            if names:
                raise ctx.bad(f"model_weights/{lay.kname} holds {len(names)} weights but "
                              f"layer {lay.kname!r} has none")
            continue
        if g is None:
            raise ctx.bad(f"the file has no weights for layer {lay.kname!r} "
                          f"(model_weights/{lay.kname})")
        if len(names) != len(lay.weights):
            raise ctx.bad(f"model_weights/{lay.kname} holds {len(names)} weights, layer "
                          f"{lay.kname!r} ({lay.kclass}) has {len(lay.weights)}")
        by_leaf = {}
        for n in names:
            by_leaf.setdefault(_leaf(n), n)
        keyed = len(by_leaf) == len(names) and all(
            (leaf, d) in by_leaf for (_s, _i, leaf, d) in lay.weights)
        for k, ((_s, _i, leaf, d), v) in enumerate(zip(lay.weights, fvars)):
            # by name when the names say which is which, else in the file's order
            n = by_leaf[(leaf, d)] if keyed else names[k]
            ds = g
            for part in n.split("/"):
                if not isinstance(ds, h5py.Group):
                    ds = None
                    break
                ds = _child(ctx, ds, part, f"model_weights/{lay.kname}")
                if ds is None:
                    break
            if ds is None:
                raise ctx.bad(f"model_weights/{lay.kname}/{n} is missing")
            v.value[...] = _as_array(ctx, ds, f"model_weights/{lay.kname}/{n}", v.shape)


# =============================================================== compile config
_OPT_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
                "adagrad": "Adagrad", "adadelta": "Adadelta", "nadam": "Nadam"}
_OPT_KEYS = {
    "SGD": {"momentum", "nesterov"},
    "Adam": {"beta_1", "beta_2", "epsilon"},
    "AdamW": {"beta_1", "beta_2", "epsilon"},
    "RMSprop": {"rho", "momentum", "epsilon", "centered"},
    "Adagrad": {"initial_accumulator_value", "epsilon"},
    "Adadelta": {"rho", "epsilon"},
    "Nadam": {"beta_1", "beta_2", "epsilon"},
}
_SCHEDULES = ("ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay")


def _optimizer(ctx, spec):
    from .. import optimizers, schedules
    cls, cfg = _class_and_config(spec)
    if isinstance(cls, str) and cls.startswith("Custom>"):
        cls = cls[len("Custom>"):]                    # tf.keras 2.11+ spelling
    if isinstance(spec, str):
        cls, cfg = spec, {}
    name = _OPT_CLASSES.get(str(cls).lower()) if isinstance(cls, str) else None
    if name is None:
        raise ctx.unsupported(f"the optimizer {cls!r} is not available in fastdrop (it has "
                              f"{sorted(_OPT_CLASSES.values())})")
    cfg = dict(cfg)
    if cfg.get("amsgrad"):
        raise ctx.unsupported(f"the optimizer {name}(amsgrad=True) is not available in "
                              "fastdrop")
    if cfg.get("use_ema"):
        raise ctx.unsupported(f"the optimizer {name}(use_ema=True) is not available in "
                              "fastdrop")
    for k in ("loss_scale_factor", "gradient_accumulation_steps"):
        if cfg.get(k) not in (None, 1):
            raise ctx.unsupported(f"the optimizer setting {k}={cfg[k]!r} is not available in "
                                  "fastdrop")
    if cfg.get("decay") not in (None, 0, 0.0):
        raise ctx.unsupported(f"the legacy optimizer setting decay={cfg['decay']!r} is not "
                              "available in fastdrop (use a learning-rate schedule)")
    lr = cfg.get("learning_rate", cfg.get("lr"))
    kw = {}
    if isinstance(lr, dict):
        scls, scfg = _class_and_config(lr)
        if scls not in _SCHEDULES:
            raise ctx.unsupported(f"the learning-rate schedule {scls!r} is not available in "
                                  f"fastdrop (it has {list(_SCHEDULES)})")
        scfg = {k: v for k, v in scfg.items()}
        try:
            kw["learning_rate"] = schedules.deserialize({"class_name": scls, "config": scfg})
        except (ValueError, TypeError) as e:
            raise ctx.unsupported(f"the learning-rate schedule {scls}: {e}") from None
    elif lr is not None:
        kw["learning_rate"] = float(lr)
    for k in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
        if cfg.get(k) is not None:
            kw[k] = float(cfg[k])
    for k in _OPT_KEYS[name]:
        if k in cfg and cfg[k] is not None:
            kw[k] = cfg[k]
    if name == "AdamW" and "weight_decay" not in kw:
        kw["weight_decay"] = 0.004
    try:
        return getattr(optimizers, name)(**kw)
    except (ValueError, TypeError) as e:
        raise ctx.bad(f"bad {name} optimizer config: {e}") from None


_LOSS_CLASSES = {"CategoricalCrossentropy", "SparseCategoricalCrossentropy",
                 "BinaryCrossentropy", "MeanSquaredError", "MeanAbsoluteError", "Huber"}
_LOSS_KEYS = {"from_logits", "label_smoothing", "axis", "reduction", "name", "dtype", "delta",
              "ignore_class"}


def _loss(ctx, spec):
    from .. import losses
    if isinstance(spec, (list, tuple)):
        if len(spec) != 1:
            raise ctx.unsupported(f"{len(spec)} losses (a multi-output model)")
        spec = spec[0]
    if isinstance(spec, str):
        try:
            return losses.get(spec)
        except ValueError:
            raise ctx.unsupported(f"the loss {spec!r} is not available in fastdrop") from None
    cls, cfg = _class_and_config(spec)
    if cls == "function" and isinstance(cfg, str):
        return _loss(ctx, cfg)
    if cls not in _LOSS_CLASSES:
        raise ctx.unsupported(f"the loss {cls!r} is not available in fastdrop (it has "
                              f"{sorted(_LOSS_CLASSES)})")
    cfg = dict(cfg)
    for k in list(cfg):
        if k not in _LOSS_KEYS:
            if cfg[k] is None:
                del cfg[k]
            else:
                raise ctx.unsupported(f"loss {cls}: the setting {k}={cfg[k]!r} is not "
                                      "available in fastdrop")
    if cfg.get("reduction") in ("auto", None):
        cfg.pop("reduction", None)
    if cfg.get("ignore_class") is None:
        cfg.pop("ignore_class", None)
    try:
        return losses.deserialize({"class_name": cls, "config": cfg})
    except (ValueError, TypeError) as e:
        raise ctx.unsupported(f"loss {cls}: {e}") from None


_METRIC_NAMES = {"accuracy": "accuracy", "acc": "accuracy",
                 "categorical_accuracy": "categorical_accuracy",
                 "CategoricalAccuracy": "categorical_accuracy",
                 "sparse_categorical_accuracy": "sparse_categorical_accuracy",
                 "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
                 "binary_accuracy": "binary_accuracy", "BinaryAccuracy": "binary_accuracy",
                 "mae": "mae", "mean_absolute_error": "mae", "MeanAbsoluteError": "mae",
                 "mse": "mse", "mean_squared_error": "mse", "MeanSquaredError": "mse"}


def _metrics(ctx, spec):
    if spec is None:
        return []
    if isinstance(spec, dict):
        raise ctx.unsupported("per-output metrics (a multi-output model)")
    if not isinstance(spec, list):
        spec = [spec]
    if len(spec) == 1 and isinstance(spec[0], list):
        spec = spec[0]
    out = []
    for m in spec:
        name = m
        if isinstance(m, dict):
            cls, cfg = _class_and_config(m)
            name = cfg if cls == "function" and isinstance(cfg, str) else cls
            if cls == "MeanMetricWrapper" and isinstance(cfg, dict):
                name = (cfg.get("fn") if isinstance(cfg.get("fn"), str) else cfg.get("name"))
        key = _METRIC_NAMES.get(name) if isinstance(name, str) else None
        if key is None:
            warnings.warn(f"{ctx.path!r}: the metric {m!r:.80} is not available in fastdrop; "
                          "it is left out", stacklevel=4)
            continue
        if key not in out:
            out.append(key)
    return out


# Keras 3 optimizer variables: [iterations, learning_rate (not with a schedule)] + slots.
# (fastdrop slot k, Keras slot names); "interleave": per trainable variable its slots in
# turn, "blocks": each slot for all variables, then the next slot.
def _slot_layout(opt):
    name = type(opt).__name__
    if name == "SGD":
        return (["momentum"] if opt.momentum > 0 else []), "interleave", 0
    if name in ("Adam", "AdamW"):
        return ["momentum", "velocity"], "interleave", 0
    if name == "Nadam":
        return ["momentum", "velocity"], "interleave", 1
    if name == "RMSprop":
        s = ["velocity"] + (["momentum"] if opt.momentum > 0 else []) + \
            (["average_gradient"] if opt.centered else [])
        return s, "blocks", 0
    if name == "Adagrad":
        return ["accumulator"], "interleave", 0
    if name == "Adadelta":
        return ["accumulated_grad", "accumulated_delta_var"], "interleave", 0
    raise AssertionError(name)


def _trainable_ranges(model):
    store = model._store
    return [(v, store.ranges[id(v)]) for v in store.weight_vars if store.is_trainable(v)]


def _set_optimizer_state(ctx, model, values, names=None):
    """``values``: the Keras optimizer variables as arrays, in Keras order (``names``:
    their names, for tf.keras 2 files whose order differs)."""
    opt = model.optimizer
    opt.build(model._store.params.size)
    slots, layout, tail = _slot_layout(opt)
    tv = _trainable_ranges(model)
    has_lr = opt.schedule is None
    head = 1 + (1 if has_lr else 0)
    if names is not None and any(n.endswith(":0") for n in names) and \
            not any(n.endswith("/iteration") for n in names):
        values = _tf2_order(ctx, model, values, names, slots)
        if values is None:
            return
    if len(values) == head + tail or len(values) == head:
        slot_vals = None        # never built in Keras: fresh slots
    elif len(values) == head + len(slots) * len(tv) + tail:
        body = values[head:head + len(slots) * len(tv)]
        slot_vals = []
        for k in range(len(slots)):
            if layout == "interleave":
                slot_vals.append(body[k::len(slots)])
            else:
                slot_vals.append(body[k * len(tv):(k + 1) * len(tv)])
    else:
        raise ctx.bad(f"the optimizer state holds {len(values)} variables; a "
                      f"{type(opt).__name__} of this model has {head + len(slots) * len(tv) + tail}"
                      f" ({len(tv)} trainable weights)")
    it = np.asarray(values[0])
    if it.shape != () or it.dtype.kind not in "iuf" or not np.isfinite(it) or it < 0 or \
            it > (1 << 62):
        raise ctx.bad("the optimizer's iteration count is malformed")
    iterations = int(it)
    if has_lr and len(values) > 1:
        lr = np.asarray(values[1], np.float64)
        if lr.shape != () or not np.isfinite(lr) or lr <= 0:
            raise ctx.bad("the optimizer's learning rate is malformed")
        opt.learning_rate = float(lr)
    state = opt.state().copy()
    if slot_vals is not None:
        for k, vals in enumerate(slot_vals):
            for (v, (lo, hi)), a in zip(tv, vals):
                a = np.asarray(a)
                if a.shape != v.shape:
                    raise ctx.bad(f"the optimizer slot {slots[k]} of {v.layer.name}/{v.name} "
                                  f"has shape {a.shape}, expected {v.shape}")
                a = np.asarray(a, np.float64)
                if not np.isfinite(a).all():
                    raise ctx.bad(f"the optimizer slot {slots[k]} of {v.layer.name}/{v.name} "
                                  "contains NaN or infinite values")
                state[k, lo:hi] = a.reshape(-1)
    opt.set_state(state, iterations)
    model._step = iterations


_TF2_SLOTS = {"momentum": ("momentum", "m"), "velocity": ("v", "velocity"),
              "average_gradient": ("mg", "average_gradient"),
              "accumulator": ("accumulator",), "accumulated_grad": ("accum_grad",),
              "accumulated_delta_var": ("accum_var",)}


def _tf2_order(ctx, model, values, names, slots):
    """tf.keras 2 names its optimizer variables '<opt>/<layer>/.../<var>/<slot>:0'
    (OptimizerV2) or '<opt>/<slot>/<layer>/.../<var>:0' (the 2.11+ optimizers), in an
    order of its own; they are matched to the model's variables by name and put in
    Keras 3's order.  Returns None (fresh slots, with a warning) when they do not match."""
    opt_name = type(model.optimizer).__name__
    alts = [("rms",) if (opt_name == "RMSprop" and s == "velocity") else _TF2_SLOTS[s]
            for s in slots]
    alts = [a + ((s,) if s not in a else ()) for a, s in zip(alts, slots)]
    every = {x for a in alts for x in a}
    it = None
    table = {}
    for n, a in zip(names, values):
        parts = (n[:-2] if n.endswith(":0") else n).split("/")[1:]
        if not parts:
            continue
        if parts[-1] in ("iter", "iteration", "iterations") and len(parts) == 1:
            it = a
        elif parts[0] in every and len(parts) > 1:
            table[(parts[0], tuple(parts[1:]))] = a
        elif parts[-1] in every and len(parts) > 1:
            table[(parts[-1], tuple(parts[:-1]))] = a
    bidir = {}
    for l in model.layers:
        for sub in (getattr(l, "forward_layer", None), getattr(l, "backward_layer", None)):
            if sub is not None:
                bidir[id(sub)] = l.name

    def find(v, k):
        want = [bidir[id(v.layer)], v.layer.name] if id(v.layer) in bidir else [v.layer.name]
        for (slot, path), a in table.items():
            if slot in alts[k] and path[-1] == v.name and all(w in path[:-1] for w in want):
                return a
        return None
    tv = _trainable_ranges(model)
    per_var = []
    for v, _r in tv:
        found = [find(v, k) for k in range(len(slots))]
        if it is None or any(a is None for a in found):
            warnings.warn(f"{ctx.path!r}: the tf.keras optimizer state does not match the "
                          f"model's variables (e.g. {v.layer.name}/{v.name}); the optimizer "
                          "starts fresh", stacklevel=4)
            return None
        per_var.append(found)
    _slots, layout, tail = _slot_layout(model.optimizer)
    body = []
    if layout == "blocks":
        for k in range(len(slots)):
            body.extend(f[k] for f in per_var)
    else:
        for f in per_var:
            body.extend(f)
    head = [it]
    if model.optimizer.schedule is None:
        head.append(np.asarray(model.optimizer.learning_rate, np.float32))
    return head + body + ([np.float32(1.0)] * tail)


def _compile(ctx, model, cc):
    """Compile ``model`` as a Keras compile_config / training_config says."""
    if not isinstance(cc, dict):
        raise ctx.bad("malformed compile config")
    opt_spec = cc.get("optimizer", cc.get("optimizer_config"))
    if opt_spec is None or cc.get("loss") is None:
        return False
    for k in ("loss_weights", "weighted_metrics"):
        if cc.get(k) not in (None, [], {}):
            raise ctx.unsupported(f"the compile setting {k}={cc[k]!r:.60} is not available "
                                  "in fastdrop")
    opt = _optimizer(ctx, opt_spec)
    loss = _loss(ctx, cc["loss"])
    metrics = _metrics(ctx, cc.get("metrics"))
    try:
        model.compile(optimizer=opt, loss=loss, metrics=metrics)
    except ValueError as e:
        raise ctx.unsupported(f"compiling as the file says failed: {e}") from None
    return True


# =============================================================== reading
def _json(ctx, raw, what):
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ctx.bad(f"{what} is not valid JSON: {e}") from None


def _check_version(ctx, version):
    if version is None:
        return None
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    m = re.match(r"^(\d+)\.(\d+)", str(version))
    if not m:
        raise ctx.unsupported(f"unknown Keras version {version!r}")
    major = int(m.group(1))
    if major not in (2, 3):
        raise ctx.unsupported(f"unknown Keras version {version!r}: fastdrop reads files of "
                              "Keras 2 (tf.keras) and Keras 3")
    return str(version)


def _open_h5(ctx, data):
    h5py = _h5py()
    _safe.check_hdf5(data, ctx.path)
    try:
        return h5py.File(io.BytesIO(data), "r")
    except Exception as e:    # OSError from libhdf5 on a damaged file
        raise ctx.bad(f"the HDF5 data cannot be opened: {e}") from None


def _guard(ctx, fn, *args):
    """fn(*args) with every unexpected failure of a damaged file as a ValueError naming
    it; the refusals (NotImplementedError) and our own ValueErrors pass unchanged."""
    try:
        return fn(*args)
    except (NotImplementedError, ImportError, MemoryError, KeyboardInterrupt):
        raise
    except ValueError as e:
        if str(e).startswith(repr(ctx.path)):
            raise
        raise ctx.bad(str(e)) from None
    except (KeyError, TypeError, AttributeError, IndexError, OSError, RuntimeError,
            OverflowError) as e:
        if os.environ.get("FASTDROP_DEBUG_IO"):
            raise
        raise ctx.bad(f"malformed Keras file ({type(e).__name__}: {e})") from None


def load_keras(filepath):
    """A fastdrop ``Sequential`` from a Keras 3 ``.keras`` archive (see the module doc)."""
    path = os.fspath(filepath)
    ctx = _Ctx(path)
    _h5py()
    return _guard(ctx, _load_keras, ctx, path)


def _load_keras(ctx, path):
    with _safe.Archive(path, path) as ar:
        if "config.json" not in ar:
            raise ctx.bad("the archive has no config.json: not a Keras .keras file")
        meta = {}
        if "metadata.json" in ar:
            meta = _json(ctx, ar.read("metadata.json", _MAX_JSON), "metadata.json")
            if not isinstance(meta, dict):
                raise ctx.bad("metadata.json is not a JSON object")
        version = _check_version(ctx, meta.get("keras_version"))
        cfg = _json(ctx, ar.read("config.json", _MAX_JSON), "config.json")
        name, plan, shape, _kind = _translate(ctx, cfg, version)
        if "model.weights.h5" not in ar:
            if "model.weights.npz" in ar:
                raise ctx.unsupported("the weights are in model.weights.npz; fastdrop reads "
                                      "the default model.weights.h5 (save with "
                                      "weights_format='h5')")
            if "model.weights.json" in ar:
                raise ctx.unsupported("the weights are sharded (model.weights.json); "
                                      "fastdrop reads a single model.weights.h5")
            raise ctx.bad("the archive has no model.weights.h5")
        data = ar.read("model.weights.h5")
    h5 = _open_h5(ctx, data)
    try:
        model = _build(ctx, name, plan, shape)
        _fill_keras_weights(ctx, model, plan, h5)
        cc = cfg.get("compile_config")
        if cc and _compile(ctx, model, cc):
            values = _opt_values(ctx, h5)
            if values is not None:
                _set_optimizer_state(ctx, model, values)
    finally:
        h5.close()
    _apply_fastdrop_meta(ctx, model, meta.get("fastdrop"))
    return model


def _opt_values(ctx, h5):
    g = _child(ctx, h5, "optimizer", "")
    if g is None:
        return None
    g = _child(ctx, g, "vars", "optimizer")
    if g is None:
        return None
    keys = list(g.keys())
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != \
            [str(i) for i in range(len(keys))]:
        raise ctx.bad(f"optimizer/vars holds unexpected entries {keys[:8]}")
    out = []
    for i in range(len(keys)):
        ds = _child(ctx, g, str(i), "optimizer/vars")
        out.append(_read_any(ctx, ds, f"optimizer/vars/{i}"))
    return out


def _read_any(ctx, ds, what, limit=1 << 34):
    h5py = _h5py()
    if not isinstance(ds, h5py.Dataset):
        raise ctx.bad(f"{what} is not a dataset")
    if ds.is_virtual or ds.external:
        raise ctx.bad(f"{what} refers to data outside the file; refusing it")
    if ds.dtype.kind not in "fiub":
        raise ctx.bad(f"{what} has dtype {ds.dtype}, expected numbers")
    if int(np.prod(ds.shape, dtype=np.int64)) > limit:
        raise ctx.bad(f"{what} is too large")
    try:
        return np.asarray(ds[()])
    except Exception as e:
        raise ctx.bad(f"{what} cannot be read: {e}") from None


def _apply_fastdrop_meta(ctx, model, meta):
    """fastdrop's own extras (seed, step) written beside the Keras data."""
    if not isinstance(meta, dict):
        return
    seed = meta.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < (1 << 64):
        model.seed = seed
    step = meta.get("step")
    if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < (1 << 62):
        model._step = step


def load_h5(filepath):
    """A fastdrop ``Sequential`` from a legacy Keras / tf.keras ``.h5`` model file."""
    path = os.fspath(filepath)
    ctx = _Ctx(path)
    _h5py()
    return _guard(ctx, _load_h5, ctx, path)


def _load_h5(ctx, path):
    data = _safe.read_file(path)
    f = _open_h5(ctx, data)
    try:
        raw = f.attrs.get("model_config")
        if raw is None:
            if "layer_names" in f.attrs or "model_weights" not in f:
                raise ctx.unsupported("the file holds weights only (save_weights), no model "
                                      "config: build the model and use load_weights")
            raise ctx.bad("the file has no model_config attribute: not a Keras model file")
        version = _check_version(ctx, f.attrs.get("keras_version"))
        cfg = _json(ctx, raw, "model_config")
        name, plan, shape, _kind = _translate(ctx, cfg, version)
        model = _build(ctx, name, plan, shape)
        _fill_h5_weights(ctx, model, plan, f)
        tc = f.attrs.get("training_config")
        if tc is not None:
            tcfg = _json(ctx, tc, "training_config")
            if _compile(ctx, model, tcfg) and "optimizer_weights" in f:
                g = _child(ctx, f, "optimizer_weights", "")
                names = _attr_list(g, "weight_names")
                values = []
                for n in names:
                    ds = g
                    for part in n.split("/"):
                        ds = _child(ctx, ds, part, "optimizer_weights") \
                            if isinstance(ds, _h5py().Group) else None
                        if ds is None:
                            raise ctx.bad(f"optimizer_weights/{n} is missing")
                    values.append(_read_any(ctx, ds, f"optimizer_weights/{n}"))
                _set_optimizer_state(ctx, model, values, names)
        extra = f.attrs.get("fastdrop")
        if extra is not None:
            _apply_fastdrop_meta(ctx, model, _json(ctx, extra, "the fastdrop attribute"))
    finally:
        f.close()
    return model


# =============================================================== writing
def _ser(module, cls, cfg):
    return {"module": module, "class_name": cls, "config": cfg, "registered_name": None}


_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
          "registered_name": None}


def _init_out(init, arg, layer):
    from .. import initializers
    name = initializers.name_of(init)
    cls = _KERAS_INIT.get(name)
    if cls is None:
        raise ValueError(f"layer {layer.name!r}: {arg} {init!r} has no Keras equivalent")
    cfg = {"seed": None}
    if cls in ("Zeros", "Ones"):
        cfg = {}
    elif cls == "Orthogonal":
        cfg = {"gain": 1.0, "seed": None}
    elif cls == "RandomUniform":
        cfg = {"minval": -0.05, "maxval": 0.05, "seed": None}
    return _ser("keras.initializers", cls, cfg)


def _reg_out(reg):
    if reg is None:
        return None
    return _ser("keras.regularizers", "L1L2", {"l1": float(reg.l1), "l2": float(reg.l2)})


def _con_out(con, rank):
    if con is None:
        return None
    axis = 0 if rank <= 2 else list(range(rank - 1))
    return _ser("keras.constraints", "MaxNorm", {"max_value": float(con.max_value),
                                                  "axis": axis})


def _base_cfg(layer):
    return {"name": layer.name, "trainable": bool(layer.trainable), "dtype": dict(_DTYPE)}


def _layer_out(layer, in_shape):
    """(class name, Keras config, [(subpath, variable)]) of one fastdrop layer."""
    from .. import layers as L
    t = type(layer).__name__
    cfg = _base_cfg(layer)
    w = [("", v) for v in layer.variables]
    if isinstance(layer, L.Dense):
        if layer.drop_connect > 0:
            raise ValueError(f"layer {layer.name!r}: Dense(drop_connect={layer.drop_connect}) "
                             "has no Keras equivalent; set drop_connect=0 (or save in "
                             "fastdrop's own format, .fdm) to save as Keras")
        cfg.update(units=layer.units, activation=layer.activation, use_bias=layer.use_bias,
                   kernel_initializer=_init_out(layer.kernel_initializer,
                                                "kernel_initializer", layer),
                   bias_initializer=_init_out(layer.bias_initializer, "bias_initializer",
                                              layer),
                   kernel_regularizer=_reg_out(layer.kernel_regularizer),
                   bias_regularizer=_reg_out(layer.bias_regularizer),
                   kernel_constraint=_con_out(layer.kernel_constraint, 2),
                   bias_constraint=_con_out(layer.bias_constraint, 1),
                   activity_regularizer=None)
    elif isinstance(layer, L.ReLU):
        cfg.update(max_value=None, negative_slope=0.0, threshold=0.0)
    elif isinstance(layer, L.Activation):
        cfg.update(activation=layer.activation)
    elif isinstance(layer, L.Dropout):
        cfg.update(rate=layer.rate, seed=layer.seed,
                   noise_shape=None if layer.noise_shape is None else list(layer.noise_shape))
    elif isinstance(layer, (L.GaussianDropout, L.AlphaDropout)):
        cfg.update(rate=layer.rate, seed=layer.seed)
        if isinstance(layer, L.AlphaDropout):
            cfg["noise_shape"] = None
    elif isinstance(layer, L.SpatialDropout2D):
        cfg.update(rate=layer.rate, seed=layer.seed, data_format="channels_last")
        cfg.pop("trainable")              # Keras's SpatialDropout2D takes no trainable=
    elif isinstance(layer, L.Flatten):
        cfg.update(data_format="channels_last")
    elif isinstance(layer, L.Reshape):
        cfg.update(target_shape=list(layer.target_shape))
    elif isinstance(layer, L.Conv2D):
        cfg.update(filters=layer.filters, kernel_size=list(layer.kernel_size),
                   strides=list(layer.strides), padding=layer.padding,
                   data_format="channels_last", dilation_rate=list(layer.dilation_rate),
                   groups=1, activation=layer.activation, use_bias=layer.use_bias,
                   kernel_initializer=_init_out(layer.kernel_initializer,
                                                "kernel_initializer", layer),
                   bias_initializer=_init_out(layer.bias_initializer, "bias_initializer",
                                              layer),
                   kernel_regularizer=_reg_out(layer.kernel_regularizer),
                   bias_regularizer=None, activity_regularizer=None,
                   kernel_constraint=_con_out(layer.kernel_constraint, 4),
                   bias_constraint=None)
    elif isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        cfg.update(pool_size=list(layer.pool_size), strides=list(layer.strides),
                   padding=layer.padding, data_format="channels_last")
    elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D,
                            L.GlobalAveragePooling1D, L.GlobalMaxPooling1D)):
        cfg.update(data_format="channels_last", keepdims=layer.keepdims)
    elif isinstance(layer, L.BatchNormalization):
        cfg.update(axis=-1, momentum=layer.momentum, epsilon=layer.epsilon,
                   center=layer.center, scale=layer.scale,
                   **{k: _init_out(getattr(layer, k), k, layer) for k in (
                       "beta_initializer", "gamma_initializer", "moving_mean_initializer",
                       "moving_variance_initializer")},
                   beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                   gamma_constraint=None, synchronized=False)
    elif isinstance(layer, L.Embedding):
        cfg.update(input_dim=layer.input_dim, output_dim=layer.output_dim,
                   embeddings_initializer=_init_out(layer.embeddings_initializer,
                                                    "embeddings_initializer", layer),
                   embeddings_regularizer=_reg_out(layer.embeddings_regularizer),
                   activity_regularizer=None,
                   embeddings_constraint=_con_out(layer.embeddings_constraint, 2),
                   mask_zero=layer.mask_zero)
    elif isinstance(layer, (L.SimpleRNN, L.LSTM, L.GRU)):
        cfg = _rnn_out(layer)
        w = [("cell", v) for v in layer.variables]
    elif isinstance(layer, L.Bidirectional):
        f, b = layer.forward_layer, layer.backward_layer
        fc, bc = _rnn_out(f), _rnn_out(b)
        fc["name"], bc["name"] = f.name, b.name
        kc = type(f).__name__
        cfg.update(merge_mode=layer.merge_mode,
                   layer=_ser("keras.layers", kc, fc),
                   backward_layer=_ser("keras.layers", kc, bc))
        w = [("forward_layer/cell", v) for v in f.variables] + \
            [("backward_layer/cell", v) for v in b.variables]
    else:
        raise ValueError(f"layer {layer.name!r} ({t}) has no Keras equivalent known to "
                         "fastdrop's Keras writer")
    return t, cfg, w


def _rnn_out(layer):
    cfg = _base_cfg(layer)
    cfg.update(return_sequences=layer.return_sequences, return_state=False,
               go_backwards=layer.go_backwards, stateful=False, unroll=False,
               zero_output_for_mask=False, units=layer.units, activation=layer.activation,
               use_bias=layer.use_bias,
               kernel_initializer=_init_out(layer.kernel_initializer, "kernel_initializer",
                                            layer),
               recurrent_initializer=_init_out(layer.recurrent_initializer,
                                               "recurrent_initializer", layer),
               bias_initializer=_init_out(layer.bias_initializer, "bias_initializer", layer),
               kernel_regularizer=_reg_out(layer.kernel_regularizer),
               recurrent_regularizer=_reg_out(layer.recurrent_regularizer),
               bias_regularizer=_reg_out(layer.bias_regularizer), activity_regularizer=None,
               kernel_constraint=_con_out(layer.kernel_constraint, 2),
               recurrent_constraint=_con_out(layer.recurrent_constraint, 2),
               bias_constraint=_con_out(layer.bias_constraint, 1),
               dropout=layer.dropout, recurrent_dropout=layer.recurrent_dropout,
               seed=layer.seed)
    t = type(layer).__name__
    if t != "SimpleRNN":
        cfg["recurrent_activation"] = layer.recurrent_activation
    if t == "LSTM":
        cfg["unit_forget_bias"] = layer.unit_forget_bias
    if t == "GRU":
        cfg["reset_after"] = layer.reset_after
    return cfg


def _optimizer_out(opt):
    from .. import schedules
    name = _OPT_CLASSES[type(opt).name]
    cfg = dict(opt.get_config())
    if isinstance(cfg.get("learning_rate"), dict) or opt.schedule is not None:
        s = schedules.serialize(opt.schedule)
        cfg["learning_rate"] = _ser("keras.optimizers.schedules", s["class_name"],
                                    s["config"])
    if not cfg.get("weight_decay") and name != "AdamW":
        cfg["weight_decay"] = None
    cfg.update(name=opt.name, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
               loss_scale_factor=None, gradient_accumulation_steps=None)
    if name in ("Adam", "AdamW"):
        cfg["amsgrad"] = False
    return _ser("keras.optimizers", name, cfg)


def _loss_out(loss):
    from .. import losses
    s = losses.serialize(loss)
    cfg = dict(s["config"])
    cfg.setdefault("reduction", "sum_over_batch_size")
    cfg.setdefault("dtype", None)
    return _ser("keras.losses", s["class_name"], cfg)


def _compile_out(model):
    if not model.compiled:
        return None
    return {"optimizer": _optimizer_out(model.optimizer), "loss": _loss_out(model.loss),
            "loss_weights": None, "metrics": list(model.metrics) or None,
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
            "jit_compile": False}


def _model_out(model):
    """(Keras model config, [(layer path, [(subpath, var)], layer name)]) of a built
    fastdrop Sequential."""
    from ..layers import Embedding, InputLayer
    if not model.built:
        raise ValueError("the model must be built (its input shape known) before it can be "
                         "saved as a Keras file: start it with Input(shape=...) or call fit")
    layers = model.layers
    shape = list(model._input_shape)
    first = layers[0] if layers else None
    inp = next((l for l in model._layers if isinstance(l, InputLayer)), None)
    entries = [_ser("keras.layers", "InputLayer", {
        "batch_shape": [None] + shape,
        "dtype": "int32" if isinstance(first, Embedding) else "float32",
        "sparse": False, "ragged": False,
        "name": inp.name if inp is not None else "input_layer"})]
    used = {}
    weights = []
    s = tuple(shape)
    for layer in layers:
        t, cfg, w = _layer_out(layer, s)
        entry = _ser("keras.layers", t, cfg)
        entry["build_config"] = {"input_shape": [None] + list(s)}
        entries.append(entry)
        s = layer.output_shape
        base = to_snake_case(t)
        if base in used:
            used[base] += 1
            p = f"{base}_{used[base]}"
        else:
            used[base] = 0
            p = base
        weights.append((p, w, layer))
    cfg = {"module": "keras", "class_name": "Sequential",
           "config": {"name": model.name, "trainable": True, "dtype": dict(_DTYPE),
                      "layers": entries},
           "registered_name": None,
           "build_config": {"input_shape": [None] + shape}}
    cc = _compile_out(model)
    if cc is not None:
        cfg["compile_config"] = cc
    return cfg, weights


def _opt_vars_out(model):
    """The Keras optimizer variables (name, array) in Keras order."""
    opt = model.optimizer
    opt.build(model._store.params.size)
    slots, layout, tail = _slot_layout(opt)
    tv = _trainable_ranges(model)
    st = opt.state()
    out = [("iteration", np.asarray(opt.iterations, np.int64))]
    if opt.schedule is None:
        out.append(("learning_rate", np.asarray(opt.learning_rate, np.float32)))

    def slot(k, v, lo, hi):
        return (f"{v.layer.name}_{v.name}_{slots[k]}", st[k, lo:hi].reshape(v.shape).copy())
    if layout == "interleave":
        for v, (lo, hi) in tv:
            for k in range(len(slots)):
                out.append(slot(k, v, lo, hi))
    else:
        for k in range(len(slots)):
            for v, (lo, hi) in tv:
                out.append(slot(k, v, lo, hi))
    if tail:       # Nadam's running product of the momentum schedule
        p = 1.0
        for s_ in range(1, opt.iterations + 1):
            p *= opt._u(s_)
        out.append(("u_product", np.asarray(p, np.float32)))
    return out


def _fastdrop_meta(model):
    from .._version import __version__
    return {"version": __version__, "seed": int(model.seed), "step": int(model._step)}


def _atomic(filepath, write):
    """write(fileobj) into a temporary file beside ``filepath``, then rename it in place."""
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".fastdrop-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _weights_h5(model, weights):
    h5py = _h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        root = f.create_group("layers")
        for path, w, layer in weights:
            g = root.create_group(path)
            subs = {}
            for sub, v in w:
                subs.setdefault(sub, []).append(v)
            if "" not in subs:
                g.create_group("vars").attrs["name"] = layer.name
            for sub, vs in subs.items():
                grp = g.require_group(sub) if sub else g
                vg = grp.create_group("vars")
                vg.attrs["name"] = vs[0].layer.name if sub else layer.name
                for i, v in enumerate(vs):
                    vg.create_dataset(str(i), data=np.asarray(v.value, np.float32))
        f.create_group("vars").attrs["name"] = model.name
        if model.compiled:
            og = f.create_group("optimizer").create_group("vars")
            og.attrs["name"] = model.optimizer.name
            for i, (_n, a) in enumerate(_opt_vars_out(model)):
                og.create_dataset(str(i), data=a)
    return buf.getvalue()


def save_keras(model, filepath):
    """Write ``model`` as a Keras 3 ``.keras`` archive (atomically)."""
    cfg, weights = _model_out(model)
    blob = _weights_h5(model, weights)
    meta = {"keras_version": WRITE_KERAS_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "fastdrop": _fastdrop_meta(model)}

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("metadata.json", json.dumps(meta))
            zf.writestr("config.json", json.dumps(cfg))
            zf.writestr("model.weights.h5", blob)
    _atomic(filepath, write)


def save_h5(model, filepath):
    """Write ``model`` as a legacy Keras HDF5 model file (atomically)."""
    h5py = _h5py()
    cfg, weights = _model_out(model)
    mcfg = {"class_name": "Sequential", "config": cfg["config"]}
    cc = cfg.get("compile_config")

    def write(fobj):
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f.attrs["backend"] = "fastdrop"
            f.attrs["keras_version"] = WRITE_KERAS_VERSION
            f.attrs["model_config"] = json.dumps(mcfg)
            f.attrs["fastdrop"] = json.dumps(_fastdrop_meta(model))
            mw = f.create_group("model_weights")
            mw.attrs["backend"] = "fastdrop"
            mw.attrs["keras_version"] = WRITE_KERAS_VERSION
            mw.attrs["layer_names"] = np.array([l.name.encode() for _p, _w, l in weights])
            for _p, w, layer in sorted(weights, key=lambda t: t[2].name):
                g = mw.create_group(layer.name)
                names = []
                for sub, v in w:
                    owner = v.layer.name if sub else layer.name
                    cell = {"LSTM": "lstm_cell", "GRU": "gru_cell",
                            "SimpleRNN": "simple_rnn_cell"}.get(type(v.layer).__name__)
                    parts = [model.name, layer.name]
                    if sub.startswith(("forward_layer", "backward_layer")):
                        parts.append(owner)
                    if cell:
                        parts.append(cell)
                    n = "/".join(parts + [v.name])
                    names.append(n.encode())
                    g.create_dataset(n, data=np.asarray(v.value, np.float32))
                g.attrs["weight_names"] = np.array(names) if names else np.array([], "S1")
            mw.create_group("top_level_model_weights").attrs["weight_names"] = \
                np.array([], "S1")
            if cc is not None:
                opt = cc["optimizer"]
                f.attrs["training_config"] = json.dumps({
                    "loss": cc["loss"], "metrics": cc["metrics"], "loss_weights": None,
                    "weighted_metrics": None,
                    "optimizer_config": {"class_name": opt["class_name"],
                                         "config": opt["config"]}})
                og = f.create_group("optimizer_weights")
                vals = _opt_vars_out(model)
                oname = model.optimizer.name
                og.attrs["weight_names"] = np.array([f"{oname}/{n}".encode()
                                                     for n, _a in vals])
                for n, a in vals:
                    og.create_dataset(f"{oname}/{n}", data=a)
        fobj.write(buf.getvalue())
    _atomic(filepath, write)

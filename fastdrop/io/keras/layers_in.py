"""Keras layer configs -> fastdrop layers (Keras 3 and tf.keras 2 spellings).  Every
setting fastdrop does not implement is refused naming the layer and the setting; nothing
is built here but the (unattached) layer objects."""
import re
import warnings

from ._common import (_ACT_ALIASES, _IGNORED_KEYS, _INIT_NAMES, _class_and_config,
                      _norm)

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
        if name == "mixed_bfloat16":
            return name
        if name.startswith("mixed_"):
            raise self.ctx.unsupported(
                f"{where} uses the mixed-precision policy {name!r}; fastdrop runs "
                "'float32' and 'mixed_bfloat16' only: set one of them in Keras before saving")
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
        from ...engine import activations as _acts
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
            from ... import regularizers
            return regularizers.get({"l1": "l1", "l2": "l2"}.get(cls.lower(), "l1_l2"))
        if cls in ("L1", "L2", "L1L2", "l1_l2"):
            from ... import regularizers
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
            from ... import constraints
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
        from ... import layers as L
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
        policy = self.dtype(cfg, where, allow_int=kclass == "InputLayer")
        common = {"name": kname, "trainable": bool(cfg.get("trainable", True))}
        if kclass != "InputLayer" and policy in ("float32", "mixed_bfloat16"):
            common["dtype"] = policy
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
        from ...layers import InputLayer
        self.check_keys(cfg, {"optional"}, where, {"sparse": (False, None),
                                                    "ragged": (False, None)})
        shape = self.input_shape_of(cfg)
        if shape is None:
            raise self.ctx.bad(f"{where} has no shape")
        dtype = self.dtype(cfg, where, allow_int=True)
        return [InputLayer(shape=shape, name=common["name"], dtype=dtype)], []

    def layer_Dense(self, cfg, where, common):
        from ...layers import Dense
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
        from ...layers import Activation
        self.check_keys(cfg, {"activation"}, where)
        return [Activation(self.activation(cfg.get("activation"), where),
                           input_shape=self._declared(cfg), **common)], []

    def layer_ReLU(self, cfg, where, common):
        from ...layers import ReLU
        self.check_keys(cfg, {"max_value", "negative_slope", "threshold"}, where)
        mx = cfg.get("max_value")
        try:
            return [ReLU(max_value=None if mx is None else float(mx),
                         negative_slope=float(cfg.get("negative_slope") or 0.0),
                         threshold=float(cfg.get("threshold") or 0.0),
                         input_shape=self._declared(cfg), **common)], []
        except (TypeError, ValueError) as e:
            raise self.ctx.bad(f"{where}: {e}") from None

    def layer_LeakyReLU(self, cfg, where, common):
        from ...layers import LeakyReLU
        self.check_keys(cfg, {"negative_slope", "alpha"}, where)
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))    # tf.keras 2: alpha
        try:
            return [LeakyReLU(negative_slope=float(slope), input_shape=self._declared(cfg),
                              **common)], []
        except (TypeError, ValueError) as e:
            raise self.ctx.bad(f"{where}: {e}") from None

    def layer_ELU(self, cfg, where, common):
        from ...layers import ELU
        self.check_keys(cfg, {"alpha"}, where)
        try:
            return [ELU(alpha=float(cfg.get("alpha", 1.0)), input_shape=self._declared(cfg),
                        **common)], []
        except (TypeError, ValueError) as e:
            raise self.ctx.bad(f"{where}: {e}") from None

    def layer_Softmax(self, cfg, where, common):
        from ...layers import Softmax
        self.check_keys(cfg, set(), where, {"axis": (-1, [-1])})
        return [Softmax(input_shape=self._declared(cfg), **common)], []

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
        from ...layers import Dropout
        return self._noise(Dropout, cfg, where, common, extra=("noise_shape",))

    def layer_GaussianDropout(self, cfg, where, common):
        from ...layers import GaussianDropout
        return self._noise(GaussianDropout, cfg, where, common)

    def layer_AlphaDropout(self, cfg, where, common):
        from ...layers import AlphaDropout
        return self._noise(AlphaDropout, cfg, where, common)

    def layer_SpatialDropout2D(self, cfg, where, common):
        from ...layers import SpatialDropout2D
        self.check_keys(cfg, {"rate", "seed", "data_format"}, where)
        return [SpatialDropout2D(rate=float(cfg["rate"]), seed=cfg.get("seed"),
                                 input_shape=self._declared(cfg), **common)], []

    def layer_Flatten(self, cfg, where, common):
        from ...layers import Flatten
        self.check_keys(cfg, {"data_format"}, where)
        return [Flatten(input_shape=self._declared(cfg), **common)], []

    def layer_Reshape(self, cfg, where, common):
        from ...layers import Reshape
        self.check_keys(cfg, {"target_shape"}, where)
        return [Reshape(tuple(cfg["target_shape"]), input_shape=self._declared(cfg),
                        **common)], []

    def layer_Conv2D(self, cfg, where, common):
        from ...layers import Activation, Conv2D
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
        from ...layers import MaxPooling2D
        return self._pool(MaxPooling2D, cfg, where, common)

    def layer_AveragePooling2D(self, cfg, where, common):
        from ...layers import AveragePooling2D
        return self._pool(AveragePooling2D, cfg, where, common)

    def _global(self, cls, cfg, where, common):
        self.check_keys(cfg, {"data_format", "keepdims"}, where)
        return [cls(keepdims=bool(cfg.get("keepdims", False)),
                    input_shape=self._declared(cfg), **common)], []

    def layer_GlobalAveragePooling2D(self, cfg, where, common):
        from ...layers import GlobalAveragePooling2D
        return self._global(GlobalAveragePooling2D, cfg, where, common)

    def layer_GlobalMaxPooling2D(self, cfg, where, common):
        from ...layers import GlobalMaxPooling2D
        return self._global(GlobalMaxPooling2D, cfg, where, common)

    def layer_GlobalAveragePooling1D(self, cfg, where, common):
        from ...layers import GlobalAveragePooling1D
        return self._global(GlobalAveragePooling1D, cfg, where, common)

    def layer_GlobalMaxPooling1D(self, cfg, where, common):
        from ...layers import GlobalMaxPooling1D
        return self._global(GlobalMaxPooling1D, cfg, where, common)

    def layer_BatchNormalization(self, cfg, where, common):
        from ...layers import BatchNormalization
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
        from ...layers import Embedding
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
        from ...layers import GRU, LSTM, SimpleRNN
        from ...layers.recurrent import _ACTS, _ACTS_SIMPLE
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
                                       allowed=_ACTS_SIMPLE if kclass == "SimpleRNN"
                                       else _ACTS),
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
        from ...layers import Bidirectional
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

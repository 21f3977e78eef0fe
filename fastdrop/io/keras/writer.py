"""Writing a fastdrop Sequential as a Keras 3 .keras archive or a legacy Keras .h5 file."""
import datetime
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from ._common import _KERAS_INIT, WRITE_KERAS_VERSION, _h5py, to_snake_case
from .compile_in import _OPT_CLASSES, _slot_layout, _trainable_ranges

# =============================================================== writing
def _ser(module, cls, cfg):
    return {"module": module, "class_name": cls, "config": cfg, "registered_name": None}


_DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
          "registered_name": None}


def _init_out(init, arg, layer):
    from ... import initializers
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


def _policy_out(layer):
    p = getattr(layer, "dtype_policy", None)
    out = dict(_DTYPE)
    out["config"] = {"name": p.name if p is not None else "float32"}
    return out


def _base_cfg(layer):
    return {"name": layer.name, "trainable": bool(layer.trainable), "dtype": _policy_out(layer)}


#: activations Keras names by a string only with their default arguments
_KERAS_STRING_DEFAULTS = {"gelu": {"approximate": False}, "leaky_relu": {"negative_slope": 0.2},
                          "elu": {"alpha": 1.0}, "celu": {"alpha": 1.0},
                          "soft_shrink": {"threshold": 0.5}, "hard_shrink": {"threshold": 0.5},
                          "squareplus": {"b": 4.0},
                          "relu": {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}}


def _no_keras_equivalent(layer, what):
    return ValueError(f"layer {layer.name!r}: {what} has no Keras equivalent (Keras names "
                      "activations by string with their default arguments only); save in "
                      "fastdrop's own format (.fdm)")


def _act_string_out(layer, name, params=None):
    """The Keras activation string of a layer's activation, or a clear refusal."""
    if name == "gelu_tanh":
        raise _no_keras_equivalent(layer, "activation 'gelu_tanh' (gelu approximate=True)")
    if name == "threshold":
        raise _no_keras_equivalent(layer, "activation 'threshold'")
    d = _KERAS_STRING_DEFAULTS.get(name, {})
    for k, v in (params or {}).items():
        if k != "axis" and d.get(k, v) != v:
            raise _no_keras_equivalent(layer, f"activation {name!r} with {k}={v!r}")
    return name


def _activation_layer_out(layer):
    """(Keras class, config entries) of an Activation layer: Keras's ReLU / LeakyReLU /
    ELU / Softmax layers carry the arguments, Activation the rest by name."""
    name, p = layer.activation, layer.activation_params
    if type(layer).__name__ in ("ReLU", "LeakyReLU", "ELU", "Softmax") or \
            (name == "relu" and p) or (name in ("leaky_relu", "elu") and p):
        if name == "relu":
            return "ReLU", {"max_value": p.get("max_value"),
                            "negative_slope": p.get("negative_slope", 0.0),
                            "threshold": p.get("threshold", 0.0)}
        if name == "leaky_relu":
            return "LeakyReLU", {"negative_slope": p.get("negative_slope", 0.2)}
        if name == "elu":
            return "ELU", {"alpha": p.get("alpha", 1.0)}
        if name == "softmax":
            return "Softmax", {"axis": -1}
    return "Activation", {"activation": _act_string_out(layer, name, p)}


def _layer_out(layer, in_shape):
    """(class name, Keras config, [(subpath, variable)]) of one fastdrop layer."""
    from ... import layers as L
    t = type(layer).__name__
    cfg = _base_cfg(layer)
    w = [("", v) for v in layer.variables]
    if isinstance(layer, L.Dense):
        if layer.drop_connect > 0:
            raise ValueError(f"layer {layer.name!r}: Dense(drop_connect={layer.drop_connect}) "
                             "has no Keras equivalent; set drop_connect=0 (or save in "
                             "fastdrop's own format, .fdm) to save as Keras")
        cfg.update(units=layer.units, activation=_act_string_out(layer, layer.activation),
                   use_bias=layer.use_bias,
                   kernel_initializer=_init_out(layer.kernel_initializer,
                                                "kernel_initializer", layer),
                   bias_initializer=_init_out(layer.bias_initializer, "bias_initializer",
                                              layer),
                   kernel_regularizer=_reg_out(layer.kernel_regularizer),
                   bias_regularizer=_reg_out(layer.bias_regularizer),
                   kernel_constraint=_con_out(layer.kernel_constraint, 2),
                   bias_constraint=_con_out(layer.bias_constraint, 1),
                   activity_regularizer=None)
    elif isinstance(layer, L.Activation):
        t, extra = _activation_layer_out(layer)
        cfg.update(extra)
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
                   groups=1, activation=_act_string_out(layer, layer.activation),
                   use_bias=layer.use_bias,
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
               zero_output_for_mask=False, units=layer.units,
               activation=_act_string_out(layer, layer.activation),
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
    from ... import schedules
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
    from ... import losses
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
            "weighted_metrics": list(model.weighted_metrics) or None, "run_eagerly": False, "steps_per_execution": 1,
            "jit_compile": False}


def _model_out(model):
    """(Keras model config, [(layer path, [(subpath, var)], layer name)]) of a built
    fastdrop Sequential."""
    from ...layers import Embedding, InputLayer
    if not model.built:
        raise ValueError("the model must be built (its input shape known) before it can be "
                         "saved as a Keras file: start it with Input(shape=...) or call fit")
    layers = model.layers
    shape = list(model._input_shape)
    first = layers[0] if layers else None
    inp = next((l for l in model._layers if isinstance(l, InputLayer)), None)
    entries = [_ser("keras.layers", "InputLayer", {
        "batch_shape": [None] + shape,
        "dtype": inp.dtype if inp is not None else
                 ("int32" if isinstance(first, Embedding) else "float32"),
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
    from ..._version import __version__
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
                    "weighted_metrics": cc["weighted_metrics"],
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

"""Keras compile configs (optimizer, loss, metrics) and optimizer state -> fastdrop."""
import warnings

import numpy as np

from ._common import _class_and_config

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
    from ... import optimizers, schedules
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
    from ... import losses
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


_METRIC_NAMES = {"accuracy": "accuracy", "acc": "acc",
                 "categorical_accuracy": "categorical_accuracy",
                 "CategoricalAccuracy": "categorical_accuracy",
                 "sparse_categorical_accuracy": "sparse_categorical_accuracy",
                 "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
                 "binary_accuracy": "binary_accuracy", "BinaryAccuracy": "binary_accuracy",
                 "mae": "mae", "mean_absolute_error": "mean_absolute_error",
                 "MeanAbsoluteError": "mean_absolute_error", "mse": "mse",
                 "mean_squared_error": "mean_squared_error",
                 "MeanSquaredError": "mean_squared_error"}


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
    for k in ("loss_weights",):
        if cc.get(k) not in (None, [], {}):
            raise ctx.unsupported(f"the compile setting {k}={cc[k]!r:.60} is not available "
                                  "in fastdrop")
    opt = _optimizer(ctx, opt_spec)
    loss = _loss(ctx, cc["loss"])
    metrics = _metrics(ctx, cc.get("metrics"))
    wmetrics = _metrics(ctx, cc.get("weighted_metrics"))
    try:
        model.compile(optimizer=opt, loss=loss, metrics=metrics, weighted_metrics=wmetrics)
    except ValueError as e:
        raise ctx.unsupported(f"compiling as the file says failed: {e}") from None
    return True

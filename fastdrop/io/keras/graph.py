"""The model around the layers: a Sequential's list or a Functional graph that must be
one chain; the fastdrop Sequential built from the translated layers."""
from ._common import to_snake_case
from .layers_in import _Translator

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
    from ... import registry
    return registry.model_class()


def _build(ctx, name, plan, shape):
    """The fastdrop Sequential of the translated layers (nothing of it exists before)."""
    from ...layers import InputLayer
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

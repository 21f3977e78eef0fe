"""PyTorch weights into a fastdrop model: ``load_torch_state_dict(model, state_dict)``.

Build the fastdrop model to mirror the ``nn.Module`` layer for layer (channels last), then
fill it from the module's ``state_dict()`` (or from the module itself, which lets the
layer settings be checked too).  Parameters are taken in the ``state_dict``'s order (the
order the module registered its submodules) and matched, one PyTorch module to one
fastdrop layer with weights, in the model's layer order:

==================  ==================================================================
PyTorch             fastdrop
==================  ==================================================================
``Linear``          ``Dense``: kernel = weight.T.  The first ``Dense`` after a
                    ``Flatten`` of an image (h, w, c) gets its rows permuted from
                    PyTorch's (c, h, w) flattening order to fastdrop's (h, w, c).
``Conv2d``          ``Conv2D``: kernel = weight (out, in, kh, kw) -> (kh, kw, in, out).
``BatchNorm1d/2d``  ``BatchNormalization``: gamma, beta, moving mean and variance from
                    weight, bias, running_mean, running_var.  Given the module, its
                    ``eps`` and ``momentum`` (Keras momentum = 1 - PyTorch's) are set on
                    the layer; given a state_dict only, build the layer with
                    ``epsilon=1e-5, momentum=0.9`` (PyTorch's defaults).
``Embedding``       ``Embedding``: the same (num_embeddings, dim) table.
``LSTM``            ``LSTM``: PyTorch's gates i, f, g, o are Keras's i, f, c, o;
                    kernel = weight_ih.T, recurrent_kernel = weight_hh.T,
                    bias = bias_ih + bias_hh.
``GRU``             ``GRU(reset_after=True)``: PyTorch's r, z, n reordered to Keras's
                    z, r, h; bias (2, 3u) = [bias_ih; bias_hh] (both kept).
``RNN``             ``SimpleRNN``: bias = bias_ih + bias_hh.
``*_reverse``       a bidirectional RNN -> ``Bidirectional`` (its backward layer).
``num_layers=k``    k stacked fastdrop RNN layers (``return_sequences=True`` but the last).
==================  ==================================================================

Inputs: fastdrop is channels-last, so PyTorch images ``x`` (N, C, H, W) go in as
``x.transpose(0, 2, 3, 1)`` (N, H, W, C); sequences as (N, T, F) — PyTorch's
``batch_first=True`` layout (with ``batch_first=False``, ``x.transpose(1, 0, 2)``).

A mismatch (a fastdrop layer against a PyTorch module of another kind or shape, a
padding or stride the fastdrop layer does not have, modules left over on either side)
is a ``ValueError`` naming both, raised before any weight of the model changes.  torch
is not needed: ``state_dict`` may be any mapping of names to arrays or tensors.
"""
import re
from collections import OrderedDict

import numpy as np

_RNN_PARAM = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _to_numpy(name, t):
    if hasattr(t, "detach"):                 # a torch tensor, without importing torch
        t = t.detach().cpu().numpy()
    a = np.asarray(t)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"state_dict[{name!r}] must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"state_dict[{name!r}] contains NaN or infinite values")
    return a


class _Unit:
    """One PyTorch module's parameters (an RNN module: one of its layers)."""

    def __init__(self, prefix, module=None, rnn_layer=None):
        self.prefix = prefix
        self.module = module
        self.rnn_layer = rnn_layer       # k of *_l{k} for RNN modules
        self.params = OrderedDict()      # local name -> array
        self.reverse = OrderedDict()     # RNN *_reverse parameters (local name w/o suffix)

    @property
    def kind(self):
        if self.module is not None:
            return type(self.module).__name__
        p = self.params
        if self.rnn_layer is not None:
            return "RNN-like"
        if "running_mean" in p:
            return "BatchNorm"
        w = p.get("weight")
        if w is not None and w.ndim == 4:
            return "Conv2d"
        return "Linear/Embedding"

    def label(self):
        name = self.prefix or "<top>"
        if self.rnn_layer is not None:
            name += f" (layer {self.rnn_layer})"
        return f"PyTorch {name!r} ({self.kind})"


def _units(state_dict, modules):
    """The state_dict's parameters grouped into units, in order."""
    units = []
    index = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise ValueError(f"state_dict keys must be parameter names, got {name!r}")
        prefix, _, local = name.rpartition(".")
        if local == "num_batches_tracked":
            continue
        a = _to_numpy(name, value)
        m = _RNN_PARAM.match(local)
        key = (prefix, int(m.group(2))) if m else (prefix, None)
        u = index.get(key)
        if u is None:
            u = _Unit(prefix, modules.get(prefix), key[1])
            index[key] = u
            units.append(u)
        if m:
            target = u.reverse if m.group(3) else u.params
            target[m.group(1)] = a
        else:
            if local in u.params:
                raise ValueError(f"state_dict has {name!r} twice")
            u.params[local] = a
    return units


def _weighted_layers(model):
    return [l for l in model.layers if l.variables]


def _fail(layer, unit, why):
    return ValueError(f"fastdrop layer {layer.name!r} ({type(layer).__name__}) does not match "
                      f"{unit.label()}: {why}")


def _need(layer, unit, names, params=None):
    params = unit.params if params is None else params
    missing = [n for n in names if n not in params]
    if missing:
        raise _fail(layer, unit, f"missing parameters {missing} (it has {list(params)})")


def _shape(layer, unit, a, want, what):
    if tuple(a.shape) != tuple(want):
        raise _fail(layer, unit, f"{what} has shape {tuple(a.shape)}, the layer needs "
                                 f"{tuple(want)}")
    return a


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_conv_module(layer, unit):
    m = unit.module
    if m is None:
        return
    if _pair(getattr(m, "stride", 1)) != tuple(layer.strides):
        raise _fail(layer, unit, f"stride {m.stride} vs strides {layer.strides}")
    if _pair(getattr(m, "dilation", 1)) != tuple(layer.dilation_rate):
        raise _fail(layer, unit, f"dilation {m.dilation} vs dilation_rate "
                                 f"{layer.dilation_rate}")
    if getattr(m, "groups", 1) != 1:
        raise _fail(layer, unit, f"groups={m.groups} (fastdrop's Conv2D has groups=1)")
    pad = m.padding
    kh, kw = layer.kernel_size
    if isinstance(pad, str):
        ok = pad == layer.padding
    else:
        pad = _pair(pad)
        if layer.padding == "valid":
            ok = pad == (0, 0)
        else:      # 'same' with stride 1 pads (k-1)*d/2 on both sides: odd kernels only
            dh, dw = layer.dilation_rate
            ok = (tuple(layer.strides) == (1, 1) and (kh - 1) * dh % 2 == 0 and
                  (kw - 1) * dw % 2 == 0 and pad == ((kh - 1) * dh // 2, (kw - 1) * dw // 2))
    if getattr(m, "padding_mode", "zeros") != "zeros":
        ok = False
    if not ok:
        raise _fail(layer, unit, f"padding {m.padding!r} (mode {getattr(m, 'padding_mode', 'zeros')}"
                                 f") cannot be expressed as padding={layer.padding!r}: fastdrop "
                                 "pads 'valid' (none) or 'same' (Keras's split)")


def _flatten_image_before(model, dense):
    """(h, w, c) when ``dense`` is the first Dense after a Flatten of an image."""
    from ..layers import Dense, Flatten
    layers = model.layers
    i = layers.index(dense)
    for j in range(i - 1, -1, -1):
        l = layers[j]
        if isinstance(l, Dense) or l.variables and not isinstance(l, Flatten):
            return None
        if isinstance(l, Flatten):
            s = l.input_shape
            return tuple(s) if s is not None and len(s) == 3 else None
    return None


def _dense(model, layer, unit):
    _need(layer, unit, ["weight"] + (["bias"] if layer.use_bias else []))
    w = unit.params["weight"]
    fin, out = layer.kernel.shape
    _shape(layer, unit, w, (out, fin), "weight")
    k = w.T
    img = _flatten_image_before(model, layer)
    if img is not None:
        h, wd, c = img
        k = k.reshape(c, h, wd, out).transpose(1, 2, 0, 3).reshape(fin, out)
    vals = {"kernel": k}
    if layer.use_bias:
        vals["bias"] = _shape(layer, unit, unit.params["bias"], (out,), "bias")
    extra = set(unit.params) - {"weight", "bias"}
    if extra or ("bias" in unit.params and not layer.use_bias):
        raise _fail(layer, unit, f"unexpected parameters {sorted(extra or {'bias'})}")
    return vals


def _conv(model, layer, unit):
    _need(layer, unit, ["weight"] + (["bias"] if layer.use_bias else []))
    kh, kw, cin, cout = layer.kernel.shape
    w = _shape(layer, unit, unit.params["weight"], (cout, cin, kh, kw), "weight")
    _check_conv_module(layer, unit)
    vals = {"kernel": w.transpose(2, 3, 1, 0)}
    if layer.use_bias:
        vals["bias"] = _shape(layer, unit, unit.params["bias"], (cout,), "bias")
    elif "bias" in unit.params:
        raise _fail(layer, unit, "the PyTorch conv has a bias, the layer has use_bias=False")
    return vals


def _bn(model, layer, unit):
    c = layer.moving_mean.shape[0]
    _need(layer, unit, ["running_mean", "running_var"])
    vals = {"moving_mean": _shape(layer, unit, unit.params["running_mean"], (c,),
                                  "running_mean"),
            "moving_variance": _shape(layer, unit, unit.params["running_var"], (c,),
                                      "running_var")}
    affine = "weight" in unit.params
    if affine != (layer.scale and layer.center):
        raise _fail(layer, unit, f"affine={affine} needs center=scale={affine}")
    if affine:
        vals["gamma"] = _shape(layer, unit, unit.params["weight"], (c,), "weight")
        vals["beta"] = _shape(layer, unit, unit.params["bias"], (c,), "bias")
    settings = {}
    m = unit.module
    if m is not None:
        settings["epsilon"] = float(m.eps)
        if m.momentum is not None:
            settings["momentum"] = 1.0 - float(m.momentum)
    return vals, settings


def _embedding(model, layer, unit):
    _need(layer, unit, ["weight"])
    return {"embeddings": _shape(layer, unit, unit.params["weight"], layer.embeddings.shape,
                                 "weight")}


def _rnn_arrays(layer, unit, params, where):
    kind = type(layer).__name__
    _need(layer, unit, ["weight_ih", "weight_hh"], params)
    u = layer.units
    g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
    F = layer.kernel.shape[0]
    wih = _shape(layer, unit, params["weight_ih"], (g * u, F), where + "weight_ih")
    whh = _shape(layer, unit, params["weight_hh"], (g * u, u), where + "weight_hh")
    has_bias = "bias_ih" in params
    if has_bias != layer.use_bias:
        raise _fail(layer, unit, f"bias={has_bias} vs use_bias={layer.use_bias}")
    bih = _shape(layer, unit, params["bias_ih"], (g * u,), where + "bias_ih") \
        if has_bias else None
    bhh = _shape(layer, unit, params["bias_hh"], (g * u,), where + "bias_hh") \
        if has_bias else None
    if kind == "GRU":
        if not layer.reset_after:
            raise _fail(layer, unit, "PyTorch's GRU applies the reset gate after the "
                                     "recurrent product: build GRU(reset_after=True)")

        def zrh(a):       # PyTorch (r, z, n) blocks -> Keras (z, r, h)
            r, z, n = a[:u], a[u:2 * u], a[2 * u:]
            return np.concatenate([z, r, n], axis=0)
        vals = {"kernel": zrh(wih).T, "recurrent_kernel": zrh(whh).T}
        if has_bias:
            vals["bias"] = np.stack([zrh(bih), zrh(bhh)])
        return vals
    vals = {"kernel": wih.T, "recurrent_kernel": whh.T}
    if has_bias:
        vals["bias"] = bih + bhh
    return vals


def _check_rnn_module(layer, unit):
    m = unit.module
    if m is None:
        return
    kind = type(layer).__name__
    want = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}[kind]
    if type(m).__name__ != want:
        raise _fail(layer, unit, f"a {kind} mirrors torch.nn.{want}")
    if getattr(m, "proj_size", 0):
        raise _fail(layer, unit, f"proj_size={m.proj_size} has no fastdrop equivalent")
    if want == "RNN":
        act = getattr(m, "nonlinearity", "tanh")
        if act != layer.activation:
            raise _fail(layer, unit, f"nonlinearity {act!r} vs activation "
                                     f"{layer.activation!r}")
    elif (layer.activation, layer.recurrent_activation) != ("tanh", "sigmoid"):
        raise _fail(layer, unit, "PyTorch's cells use tanh and sigmoid")


def _rnn(model, layer, unit):
    from ..layers import Bidirectional
    if isinstance(layer, Bidirectional):
        if not unit.reverse:
            raise _fail(layer, unit, "a Bidirectional layer needs bidirectional=True (the "
                                     "*_reverse parameters)")
        f, b = layer.forward_layer, layer.backward_layer
        _check_rnn_module(f, unit)
        return {f: _rnn_arrays(f, unit, unit.params, ""),
                b: _rnn_arrays(b, unit, unit.reverse, "reverse ")}
    if unit.reverse:
        raise _fail(layer, unit, "the PyTorch RNN is bidirectional: wrap the layer in "
                                 "Bidirectional(...)")
    _check_rnn_module(layer, unit)
    return {layer: _rnn_arrays(layer, unit, unit.params, "")}


_EXPECT = {"Dense": ("Linear",), "Conv2D": ("Conv2d",),
           "BatchNormalization": ("BatchNorm1d", "BatchNorm2d", "BatchNorm"),
           "Embedding": ("Embedding",), "LSTM": ("LSTM",), "GRU": ("GRU",),
           "SimpleRNN": ("RNN",), "Bidirectional": ("LSTM", "GRU", "RNN")}


def load_torch_state_dict(model, state_dict):
    """Fill the built fastdrop ``model`` from a PyTorch ``state_dict`` (any mapping of
    names to tensors or arrays) or from an ``nn.Module`` (whose layer settings are then
    checked too).  See the module doc for the mapping.  Returns ``model``."""
    from ..layers import LSTM, GRU, BatchNormalization, Bidirectional, Conv2D, Dense, \
        Embedding, SimpleRNN
    if not getattr(model, "built", False):
        raise ValueError("the model must be built (its input shape known) before weights "
                         "can be loaded into it")
    modules = {}
    if hasattr(state_dict, "state_dict") and hasattr(state_dict, "named_modules"):
        modules = dict(state_dict.named_modules())
        state_dict = state_dict.state_dict()
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of names to tensors or arrays (or an "
                        f"nn.Module), got {type(state_dict).__name__}")
    units = _units(state_dict, modules)
    layers = _weighted_layers(model)
    handlers = {Dense: _dense, Conv2D: _conv, BatchNormalization: _bn, Embedding: _embedding,
                LSTM: _rnn, GRU: _rnn, SimpleRNN: _rnn, Bidirectional: _rnn}
    plan = []          # (layer, {var name: array}, settings)
    for k, layer in enumerate(layers):
        if k >= len(units):
            raise ValueError(f"fastdrop layer {layer.name!r} ({type(layer).__name__}) has no "
                             f"PyTorch counterpart: the state_dict has only {len(units)} "
                             f"modules with parameters for {len(layers)} fastdrop layers "
                             "with weights")
        unit = units[k]
        fn = next((h for c, h in handlers.items() if type(layer) is c), None)
        if fn is None:
            raise ValueError(f"fastdrop layer {layer.name!r} ({type(layer).__name__}) has "
                             "no PyTorch counterpart known to load_torch_state_dict")
        tname = type(layer).__name__
        if unit.module is not None and type(unit.module).__name__ not in _EXPECT[tname]:
            raise _fail(layer, unit, f"a {tname} mirrors torch.nn.{'/'.join(_EXPECT[tname])}")
        if unit.module is None and (
                (tname in ("LSTM", "GRU", "SimpleRNN", "Bidirectional")) !=
                (unit.rnn_layer is not None) or
                (tname == "Conv2D") != (unit.kind == "Conv2d") or
                (tname == "BatchNormalization") != (unit.kind == "BatchNorm")):
            raise _fail(layer, unit, f"a {tname} cannot take parameters {list(unit.params)}")
        res = fn(model, layer, unit)
        settings = {}
        if isinstance(res, tuple):
            res, settings = res
        if tname in ("LSTM", "GRU", "SimpleRNN", "Bidirectional"):
            for sub, vals in res.items():
                plan.append((sub, vals, {}))
        else:
            plan.append((layer, res, settings))
    if len(units) > len(layers):
        left = ", ".join(u.label() for u in units[len(layers):])
        raise ValueError(f"the state_dict has modules left over after the model's last layer "
                         f"with weights ({layers[-1].name if layers else 'none'!r}): {left}")
    # every array checked: now write them (nothing changed before this point)
    for layer, vals, settings in plan:
        for v in layer.variables:
            if v.name not in vals:
                raise _fail(layer, units[0], f"no value for variable {v.name!r}")
            a = np.asarray(vals[v.name])
            if a.shape != v.shape:
                raise ValueError(f"internal: {layer.name}/{v.name} {a.shape} != {v.shape}")
    for layer, vals, settings in plan:
        for v in layer.variables:
            v.value[...] = vals[v.name]
        for k, val in settings.items():
            setattr(layer, k, val)
    return model

"""Model files: a zip (NumPy ``.npz`` layout) holding a JSON header and raw float32
arrays — no pickle anywhere.  ``save_model`` writes a temporary file in the target
directory, fsyncs it and renames it into place, so a crash mid-save leaves any previous
file intact.  ``load_model`` validates every field and raises ``ValueError`` naming the
file for anything corrupt, truncated, foreign or inconsistent."""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .. import optimizers
from .. import registry as _registry
from ..layers.core import InputLayer

FORMAT = "fastdrop-model"
WEIGHTS_FORMAT = "fastdrop-weights"
FORMAT_VERSION = 2          # 1: the MLP engine's files (still loaded)


def _variables(model):
    return [[v.layer.name, v.name, list(v.shape), "state" if v.state else "weight"]
            for v in model._store.vars]


def _header(model):
    from .._version import __version__
    h = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastdrop_version": __version__,
        "config": model.get_config(),
        "built": bool(model.built),
        "input_shape": list(model._input_shape) if model.built else None,
        "step": int(model._step),
        "compile": None,
    }
    if model.built:
        h["variables"] = _variables(model)
    if model.compiled:
        h["compile"] = {
            "optimizer": {"name": model.optimizer.name, "config": model.optimizer.get_config()},
            "optimizer_iterations": int(model.optimizer.iterations),
            "loss": {"name": model.loss.name, "config": model.loss.get_config()},
            "metrics": list(model.metrics),
            "weighted_metrics": list(model.weighted_metrics),
        }
    return h


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(filepath, arrays):
    """Write an npz of ``arrays`` to a temporary file beside ``filepath``, fsync it and
    rename it into place (a crash leaves any previous file intact).  The file gets the
    permissions any new file of the process gets (0666 & ~umask)."""
    if hasattr(filepath, "write"):
        np.savez(filepath, **arrays)
        return
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".fastdrop-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _arrays(model, header):
    arrays = {"__fastdrop__": np.frombuffer(json.dumps(header).encode(), np.uint8)}
    if model.built:
        arrays["params"] = model._store.params
        arrays["state"] = model._store.state
    return arrays


def save_model(model, filepath):
    arrays = _arrays(model, _header(model))
    if model.built and model.compiled and model.optimizer.state() is not None:
        arrays["optimizer_state"] = model.optimizer.state()
    _atomic_write(filepath, arrays)


def save_weights(model, filepath):
    from .._version import __version__
    model._require_built()
    header = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION,
              "fastdrop_version": __version__, "variables": _variables(model)}
    arrays = {"__fastdrop__": np.frombuffer(json.dumps(header).encode(), np.uint8),
              "params": model._store.params, "state": model._store.state}
    _atomic_write(filepath, arrays)


def model_to_bytes(model):
    buf = io.BytesIO()
    save_model(model, buf)
    return buf.getvalue()


def model_from_bytes(data):
    return _load(io.BytesIO(data), "<bytes>")


def _bad(path, why):
    return ValueError(f"{path!r} is not a valid fastdrop model file: {why}")


_MAX_PARAMS = 1 << 34          # 64 GiB of float32: anything larger is not a real model
_MAX_COUNT = 1 << 62           # step / iteration counters


def _int(v, name, lo=0, hi=_MAX_COUNT):
    if isinstance(v, bool) or not isinstance(v, int) or not (lo <= v <= hi):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _npy_shape(zf, member):
    """Shape and dtype from an .npy member's header, without reading its data."""
    with zf.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), dtype, fortran


def _read_header(zf, path, fmt):
    names = set(zf.namelist())
    if "__fastdrop__.npy" not in names:
        raise _bad(path, "no fastdrop header")
    shape, dtype, _ = _npy_shape(zf, "__fastdrop__.npy")
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > (1 << 24):
        raise _bad(path, "malformed header array")
    with zf.open("__fastdrop__.npy") as f:
        raw = np.lib.format.read_array(f, allow_pickle=False)
    header = json.loads(bytes(raw).decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise _bad(path, "wrong format tag")
    if header.get("format_version") not in (1, FORMAT_VERSION):
        raise _bad(path, f"unsupported format version {header.get('format_version')!r}")
    return header, names


def _read_block(zf, names, path, member, size, what):
    """The float32 block ``member`` of exactly ``size`` values (checked before reading)."""
    if member + ".npy" not in names:
        if size == 0:
            return np.empty(0, np.float32)
        raise _bad(path, f"no {what} block")
    shape, dtype, fortran = _npy_shape(zf, member + ".npy")
    if dtype != np.float32 or shape != (size,):
        raise _bad(path, f"{what} block {shape} {dtype} does not match the architecture "
                         f"({size},) float32")
    with zf.open(member + ".npy") as f:
        arr = np.lib.format.read_array(f, allow_pickle=False)
    if not np.isfinite(arr).all():
        raise _bad(path, f"{what} contains NaN or infinite values")
    return arr


def _layers_from_config(cfg, path):
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise _bad(path, "malformed config")
    out = []
    for spec in cfg["layers"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise _bad(path, "malformed layer entry")
        cls = _registry.layer_class(spec.get("class_name"))
        if cls is None:
            raise _bad(path, f"unknown layer type {spec.get('class_name')!r}")
        out.append(cls.from_config(dict(spec["config"])))
    return out


def _declared_sizes(layers, input_shape):
    """(weight count, state count, [(layer, var, shape, kind)]) implied by the layer
    configs — computed on the configs alone, before any allocation."""
    shape = tuple(input_shape)
    nw = ns = 0
    spec = []
    for layer in layers:
        if isinstance(layer, InputLayer):
            continue
        shape = layer.build(shape)
        for v in layer.variables:
            if v.state:
                ns += v.size
            else:
                nw += v.size
            spec.append([v.layer.name, v.name, list(v.shape), "state" if v.state else "weight"])
            if nw + ns > _MAX_PARAMS:
                raise ValueError(f"the architecture declares over {_MAX_PARAMS} parameters")
    for layer in layers:   # built again, for real, by the model
        layer.variables = []
        layer.built = False
    return nw, ns, spec


def _input_shape(header, layers, path):
    if header.get("format_version") == 1:
        d = _int(header["input_dim"], "input_dim", 1, _MAX_PARAMS)
        for layer in layers:   # a v1 Flatten/Input may declare the unflattened shape
            if layer.declared_input_shape is not None:
                ds = layer.declared_input_shape
                if int(np.prod(ds)) == d:
                    return ds
                break
        return (d,)
    shape = header["input_shape"]
    if not isinstance(shape, list) or not shape or len(shape) > 8:
        raise _bad(path, "malformed input shape")
    return tuple(None if v is None else _int(v, "input_shape", 1, _MAX_PARAMS) for v in shape)


def _make_loss(name, cfg, path):
    from .. import losses
    loss = losses.get(name)
    if cfg:
        if not isinstance(cfg, dict):
            raise _bad(path, "malformed loss config")
        try:
            loss = type(loss)(**cfg)
        except TypeError as e:
            raise _bad(path, f"bad loss config: {e}") from None
    return loss


def load_model(filepath):
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    return _load(path, path)


def _checked(path, fn, *args):
    """fn(*args), every failure of a damaged file turned into a ValueError naming it."""
    try:
        return fn(*args)
    except ValueError as e:
        if str(e).startswith(repr(path)):
            raise
        raise _bad(path, e) from None
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # zip/npy/json damage of any kind, huge sizes, bad types
        raise _bad(path, f"{type(e).__name__}: {e}") from None


def _load(source, path):
    return _checked(path, _load_unchecked, source, path)


def _load_unchecked(source, path):
    Sequential = _registry.model_class()

    with zipfile.ZipFile(source) as zf:
        header, names = _read_header(zf, path, FORMAT)
        cfg = header["config"]
        built = header.get("built")
        if not isinstance(built, bool):
            raise _bad(path, "malformed 'built' flag")
        layers = _layers_from_config(cfg, path)
        params = state = opt_state = None
        in_shape = None
        if built:
            in_shape = _input_shape(header, layers, path)
            nw, ns, spec = _declared_sizes(layers, in_shape)
            if header.get("format_version") != 1 and header.get("variables") != spec:
                raise _bad(path, "the variables do not match the architecture")
            params = _read_block(zf, names, path, "params", nw, "parameter")
            state = _read_block(zf, names, path, "state", ns, "state") \
                if header.get("format_version") != 1 else np.empty(0, np.float32)
            if "optimizer_state.npy" in names:
                shape, dtype, fortran = _npy_shape(zf, "optimizer_state.npy")
                if dtype != np.float32 or len(shape) != 2 or shape[1] != nw or shape[0] > 4:
                    raise _bad(path, "optimizer state does not match the architecture")
                with zf.open("optimizer_state.npy") as f:
                    opt_state = np.lib.format.read_array(f, allow_pickle=False)
    model = Sequential(seed=_int(cfg["seed"], "seed", 0, (1 << 64) - 1),
                       name=str(cfg["name"]))
    for layer in layers:
        model.add(layer)
    comp = header.get("compile")
    if comp is not None:
        opt_cfg = comp["optimizer"]["config"]
        if not isinstance(opt_cfg, dict):
            raise _bad(path, "malformed optimizer config")
        for k, v in opt_cfg.items():
            if not isinstance(v, bool) and isinstance(v, (int, float)) and not (abs(v) < 1e6):
                raise _bad(path, f"optimizer setting {k}={v!r} out of range")
        opt = optimizers.from_config(comp["optimizer"]["name"], opt_cfg)
        loss = _make_loss(comp["loss"]["name"], comp["loss"].get("config"), path)
        metrics = comp["metrics"]
        wmetrics = comp.get("weighted_metrics", [])
        if not isinstance(metrics, list) or not isinstance(wmetrics, list):
            raise _bad(path, "malformed metrics")
        model.compile(optimizer=opt, loss=loss, metrics=metrics, weighted_metrics=wmetrics)
    if built:
        if not model.built or model._input_shape != in_shape:
            model._build(in_shape)
        model._store.params[...] = params
        model._store.state[...] = state
        model._step = _int(header["step"], "step")
        if comp is not None:
            model.optimizer.build(model._store.params.size)
            if opt_state is not None:
                if opt_state.shape != model.optimizer.state().shape:
                    raise _bad(path, "optimizer state does not match the optimizer")
                if not np.isfinite(opt_state).all():
                    raise _bad(path, "optimizer state contains NaN or infinite values")
                model.optimizer.set_state(
                    opt_state, _int(comp["optimizer_iterations"], "optimizer_iterations"))
    return model


def load_weights(model, filepath):
    """Read a ``save_weights`` file (or the weights of a model file) into ``model``."""
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path!r}")
    model._require_built()
    params, state = _checked(path, _read_weights, model, path)
    model._store.params[...] = params
    model._store.state[...] = state


def _read_weights(model, path):
    with zipfile.ZipFile(path) as zf:
        try:
            header, names = _read_header(zf, path, WEIGHTS_FORMAT)
        except ValueError:
            header, names = _read_header(zf, path, FORMAT)
        # matched by position, variable name, shape and kind (as Keras matches weights
        # by topology): the layers' names may differ between two models
        want = [v[1:] for v in _variables(model)]
        got = header.get("variables")
        if not isinstance(got, list) or [v[1:] if isinstance(v, list) else v
                                         for v in got] != want:
            raise _bad(path, "its variables do not match this model's (same architecture "
                             "needed)")
        return (_read_block(zf, names, path, "params", model._store.params.size, "parameter"),
                _read_block(zf, names, path, "state", model._store.state.size, "state"))

"""Model files: a zip (NumPy ``.npz`` layout) holding a JSON header and raw float32
arrays — no pickle anywhere.  ``save_model`` writes a temporary file in the target
directory, fsyncs it and renames it into place, so a crash mid-save leaves any previous
file intact.  ``load_model`` validates every field and raises ``ValueError`` naming the
file for anything corrupt, truncated, foreign or inconsistent."""
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "fastdrop-model"
FORMAT_VERSION = 1


def _header(model):
    from ._version import __version__
    h = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastdrop_version": __version__,
        "config": model.get_config(),
        "built": bool(model.built),
        "input_dim": int(model.input_dim) if model.built else None,
        "step": int(model._step),
        "compile": None,
    }
    if model.compiled:
        h["compile"] = {
            "optimizer": {"name": model.optimizer.name, "config": model.optimizer.get_config()},
            "optimizer_iterations": int(model.optimizer.iterations),
            "loss": {"name": model.loss.name, "config": model.loss.get_config()},
            "metrics": list(model.metrics),
        }
    return h


def save_model(model, filepath):
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} does not exist")
    arrays = {"__fastdrop__": np.frombuffer(json.dumps(_header(model)).encode(), np.uint8)}
    if model.built:
        arrays["params"] = model._params
        if model.compiled and model.optimizer.state() is not None:
            arrays["optimizer_state"] = model.optimizer.state()
    fd, tmp = tempfile.mkstemp(prefix=".fastdrop-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def _expected_params(layers, input_dim):
    """Parameter count implied by the layer configs (checked before any allocation)."""
    dim = input_dim
    total = 0
    for spec in layers:
        if spec.get("class_name") == "Dense":
            cfg = spec["config"]
            units = _int(cfg["units"], "units", 1, _MAX_PARAMS)
            total += dim * units + (units if cfg.get("use_bias", True) else 0)
            dim = units
            if total > _MAX_PARAMS:
                raise ValueError(f"the architecture declares over {_MAX_PARAMS} parameters")
    return total


def load_model(filepath):
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        return _load(path)
    except ValueError as e:
        if str(e).startswith(repr(path)):
            raise
        raise _bad(path, e) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # zip/npy/json damage of any kind, huge sizes, bad types
        raise _bad(path, f"{type(e).__name__}: {e}") from None


def _load(path):
    from . import layers as L
    from . import losses, optimizers
    from .models import Sequential

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "__fastdrop__.npy" not in names:
            raise _bad(path, "no fastdrop header")
        shape, dtype, _ = _npy_shape(zf, "__fastdrop__.npy")
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > (1 << 24):
            raise _bad(path, "malformed header array")
        with zf.open("__fastdrop__.npy") as f:
            raw = np.lib.format.read_array(f, allow_pickle=False)
        header = json.loads(bytes(raw).decode("utf-8"))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise _bad(path, "wrong format tag")
        if header.get("format_version") != FORMAT_VERSION:
            raise _bad(path, f"unsupported format version {header.get('format_version')!r}")
        cfg = header["config"]
        built = header.get("built")
        if not isinstance(built, bool):
            raise _bad(path, "malformed 'built' flag")
        input_dim = _int(header["input_dim"], "input_dim", 1, _MAX_PARAMS) if built else None
        params = state = None
        if built:
            expected = _expected_params(cfg["layers"], input_dim)
            if "params.npy" not in names:
                raise _bad(path, "no parameter block")
            shape, dtype, fortran = _npy_shape(zf, "params.npy")
            if dtype != np.float32 or shape != (expected,):
                raise _bad(path, f"parameter block {shape} {dtype} does not match the "
                                 f"architecture ({expected},) float32")
            with zf.open("params.npy") as f:
                params = np.lib.format.read_array(f, allow_pickle=False)
            if "optimizer_state.npy" in names:
                shape, dtype, fortran = _npy_shape(zf, "optimizer_state.npy")
                if dtype != np.float32 or len(shape) != 2 or shape[1] != expected \
                        or shape[0] > 4:
                    raise _bad(path, "optimizer state does not match the architecture")
                with zf.open("optimizer_state.npy") as f:
                    state = np.lib.format.read_array(f, allow_pickle=False)
    model = Sequential(seed=_int(cfg["seed"], "seed", 0, (1 << 64) - 1),
                       name=str(cfg["name"]))
    for spec in cfg["layers"]:
        cls = L.LAYER_TYPES.get(spec["class_name"])
        if cls is None:
            raise _bad(path, f"unknown layer type {spec['class_name']!r}")
        model.add(cls.from_config(dict(spec["config"])))
    comp = header.get("compile")
    if comp is not None:
        opt_cfg = comp["optimizer"]["config"]
        for k, v in opt_cfg.items():
            if not isinstance(v, bool) and isinstance(v, (int, float)) and not (abs(v) < 1e6):
                raise _bad(path, f"optimizer setting {k}={v!r} out of range")
        opt = optimizers.from_config(comp["optimizer"]["name"], opt_cfg)
        loss = losses.get(comp["loss"]["name"])
        loss.from_logits = bool(comp["loss"]["config"].get("from_logits", False))
        model.compile(optimizer=opt, loss=loss, metrics=comp["metrics"])
    if built:
        model.build(input_dim)
        if not np.isfinite(params).all():
            raise _bad(path, "parameters contain NaN or infinite values")
        model._params[...] = params
        model._step = _int(header["step"], "step")
        if comp is not None:
            model.optimizer.build(model._params.size)
            if state is not None:
                if state.shape != model.optimizer.state().shape:
                    raise _bad(path, "optimizer state does not match the optimizer")
                if not np.isfinite(state).all():
                    raise _bad(path, "optimizer state contains NaN or infinite values")
                model.optimizer.set_state(
                    state, _int(comp["optimizer_iterations"], "optimizer_iterations"))
    return model

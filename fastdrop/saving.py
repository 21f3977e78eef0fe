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


def load_model(filepath):
    from . import layers as L
    from . import losses, optimizers
    from .models import Sequential

    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "__fastdrop__" not in names:
                raise _bad(path, "no fastdrop header")
            header = json.loads(bytes(z["__fastdrop__"]).decode("utf-8"))
            params = z["params"] if "params" in names else None
            state = z["optimizer_state"] if "optimizer_state" in names else None
    except ValueError as e:
        if str(e).startswith(repr(path)):
            raise
        raise _bad(path, e) from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, UnicodeDecodeError) as e:
        raise _bad(path, f"{type(e).__name__}: {e}") from None
    try:
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise _bad(path, "wrong format tag")
        if header.get("format_version") != FORMAT_VERSION:
            raise _bad(path, f"unsupported format version {header.get('format_version')!r}")
        cfg = header["config"]
        model = Sequential(seed=int(cfg["seed"]), name=str(cfg["name"]))
        for spec in cfg["layers"]:
            cls = L.LAYER_TYPES.get(spec["class_name"])
            if cls is None:
                raise _bad(path, f"unknown layer type {spec['class_name']!r}")
            model.add(cls.from_config(dict(spec["config"])))
        comp = header.get("compile")
        if comp is not None:
            opt = optimizers.from_config(comp["optimizer"]["name"], comp["optimizer"]["config"])
            loss = losses.get(comp["loss"]["name"])
            loss.from_logits = bool(comp["loss"]["config"].get("from_logits", False))
            model.compile(optimizer=opt, loss=loss, metrics=comp["metrics"])
        if header.get("built"):
            model.build(int(header["input_dim"]))
            if params is None or params.dtype != np.float32 or params.ndim != 1 \
                    or params.size != model._params.size:
                raise _bad(path, f"parameter block does not match the architecture "
                                 f"({None if params is None else params.shape} vs "
                                 f"({model._params.size},))")
            if not np.isfinite(params).all():
                raise _bad(path, "parameters contain NaN or infinite values")
            model._params[...] = params
            model._step = int(header["step"])
            if comp is not None:
                model.optimizer.build(model._params.size)
                if state is not None:
                    if state.dtype != np.float32 or state.shape != model.optimizer.state().shape:
                        raise _bad(path, "optimizer state does not match the architecture")
                    model.optimizer.set_state(state, int(comp["optimizer_iterations"]))
    except ValueError as e:
        if str(e).startswith(repr(path)):
            raise
        raise _bad(path, e) from None
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad(path, f"malformed header ({type(e).__name__}: {e})") from None
    return model

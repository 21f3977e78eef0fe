"""Loading a Keras .keras archive or legacy .h5 file as a fastdrop Sequential."""
import io
import json
import os
import re

import numpy as np

from .. import _safe
from ._common import MAX_JSON, _Ctx, _h5py
from .compile_in import _compile, _set_optimizer_state
from .graph import _build, _translate
from .weights_in import _attr_list, _child, _fill_h5_weights, _fill_keras_weights

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
            meta = _json(ctx, ar.read("metadata.json", MAX_JSON), "metadata.json")
            if not isinstance(meta, dict):
                raise ctx.bad("metadata.json is not a JSON object")
        version = _check_version(ctx, meta.get("keras_version"))
        cfg = _json(ctx, ar.read("config.json", MAX_JSON), "config.json")
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

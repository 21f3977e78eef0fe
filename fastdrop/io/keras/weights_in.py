"""Weights of a Keras file into a built fastdrop model (.keras archives and legacy .h5);
every dataset is checked (hard links only, in the file, shape, dtype, finite) before it
is read."""
import numpy as np

from ._common import _h5py

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

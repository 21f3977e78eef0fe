"""Damaged, hostile and foreign model files: each is a clear exception naming the file and
the problem, nothing is extracted to disk, and the process lives.  The files are made from
the committed Keras fixtures and loaded in a subprocess (a crash inside libhdf5 or zlib
would kill it, and the test would see that)."""
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

DATA = os.path.join(os.path.dirname(__file__), "data", "keras")
# the fastdrop this test process imported (a checkout built in place or an installed wheel;
# the source tree beside an installed wheel has no compiled extension)
import fastdrop  # noqa: E402
_FD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))


def _zip(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name) if isinstance(name, str) else name, data)
    return buf.getvalue()


def _members(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def _edit_weights(path, edit):
    out = []
    for name, data in _members(path):
        if name == "model.weights.h5":
            buf = io.BytesIO(data)
            with h5py.File(buf, "a") as f:
                edit(f)
            data = buf.getvalue()
        out.append((name, data))
    return _zip(out)


def _patch_declared_size(data, member, size):
    """Set ``member``'s uncompressed size in the central directory (a lie)."""
    data = bytearray(data)
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        name = bytes(data[pos + 46:pos + 46 + n]).decode()
        if name == member:
            struct.pack_into("<I", data, pos + 24, size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(data)


def _bad_files(tmp):
    keras_file = os.path.join(DATA, "cnn.keras")
    h5_file = os.path.join(DATA, "cnn.h5")
    kb = open(keras_file, "rb").read()
    hb = open(h5_file, "rb").read()
    members = _members(keras_file)
    files = {
        "empty.keras": b"",
        "empty.h5": b"",
        "text.keras": b"this is not a model\n" * 10,
        "trunc10.keras": kb[:10],
        "trunc_half.keras": kb[:len(kb) // 2],
        "trunc_end.keras": kb[:-30],
        "trunc_half.h5": hb[:len(hb) // 2],
        "trunc_sb.h5": hb[:40],
        "junk_sig.h5": b"\x89HDF\r\n\x1a\n" + np.random.default_rng(0).bytes(4096),
        "dotdot.keras": _zip([("../evil.json", b"{}")] + members),
        "absolute.keras": _zip(members + [("/etc/evil", b"x")]),
        "bomb_ratio.keras": _zip([(n, d) for n, d in members if n != "model.weights.h5"] +
                                 [("model.weights.h5", b"\x00" * (64 << 20))],
                                 zipfile.ZIP_DEFLATED),
        "bomb_lie.keras": _patch_declared_size(
            _zip([(n, d) for n, d in members if n != "model.weights.h5"] +
                 [("model.weights.h5", b"\x00" * (4 << 20))], zipfile.ZIP_DEFLATED),
            "model.weights.h5", 1000),
        "bad_json.keras": _zip([(n, b"{not json" if n == "config.json" else d)
                                for n, d in members]),
        "no_weights.keras": _zip([(n, d) for n, d in members if n != "model.weights.h5"]),
        "junk_weights.keras": _zip([(n, b"\x89HDF\r\n\x1a\n" + b"\x07" * 3000
                                     if n == "model.weights.h5" else d) for n, d in members]),
        "version.keras": _zip([(n, json.dumps({"keras_version": "7.0.0"}).encode()
                                if n == "metadata.json" else d) for n, d in members]),
        "shape.keras": _edit_weights(keras_file, lambda f: (
            f["layers/dense/vars"].__delitem__("0"),
            f["layers/dense/vars"].create_dataset("0", data=np.zeros((5, 3), np.float32)))),
        "extra_var.keras": _edit_weights(keras_file, lambda f: f["layers/dense/vars"]
                                         .create_dataset("2", data=np.zeros(3, np.float32))),
        "missing_var.keras": _edit_weights(keras_file,
                                           lambda f: f["layers/dense/vars"].__delitem__("1")),
        "nan.keras": _edit_weights(keras_file, lambda f: f["layers/dense/vars/1"].__setitem__(
            (), np.full(3, np.nan, np.float32))),
        "opt_count.keras": _edit_weights(keras_file, lambda f: f["optimizer/vars"]
                                         .create_dataset("99", data=np.zeros(1))),
        "extlink.keras": _edit_weights(keras_file, lambda f: (
            f["layers/dense/vars"].__delitem__("1"),
            f["layers/dense/vars"].__setitem__("1", h5py.ExternalLink("/etc/passwd", "/x")))),
    }
    rng = np.random.default_rng(1)
    for k in range(4):                  # superblock intact, the body scrambled
        b = bytearray(hb)
        idx = rng.integers(200, len(b), 400)
        for i in idx:
            b[i] = rng.integers(0, 256)
        files[f"scrambled{k}.h5"] = bytes(b)
    h5_shape = io.BytesIO(hb)
    with h5py.File(h5_shape, "a") as f:
        g = f["model_weights/dense"]
        name = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]][0]
        del g[name]
        g.create_dataset(name, data=np.zeros((2, 2), np.float32))
    files["shape.h5"] = h5_shape.getvalue()
    paths = {}
    for name, data in files.items():
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        paths[name] = p
    return paths


_RUNNER = r"""
import json, sys
from fastdrop.models import load_model
for path in sys.argv[1:]:
    try:
        load_model(path)
        res = {"path": path, "type": None, "msg": "loaded"}
    except Exception as e:
        res = {"path": path, "type": type(e).__name__, "msg": str(e)}
    print(json.dumps(res), flush=True)
print("DONE", flush=True)
"""


def test_bad_files_clear_errors_in_a_subprocess(tmp_path):
    src = tmp_path / "files"
    src.mkdir()
    paths = _bad_files(str(src))
    work, tmpd = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmpd.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpd),
               PYTHONPATH=os.pathsep.join([_FD_ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                                     if p]))
    r = subprocess.run([sys.executable, "-c", _RUNNER, *paths.values()], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"the process died: rc={r.returncode}\n{r.stderr[-3000:]}"
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert r.stdout.rstrip().endswith("DONE")
    assert len(lines) == len(paths)
    for res in lines:
        name = os.path.basename(res["path"])
        assert res["type"] in ("ValueError", "NotImplementedError", "UnsafeFile"), (name, res)
        assert res["path"] in res["msg"], (name, res["msg"])
    by = {os.path.basename(r_["path"]): r_["msg"] for r_ in lines}
    assert "empty" in by["empty.keras"] or "not a valid" in by["empty.keras"]
    assert "'..'" in by["dotdot.keras"] and "absolute" in by["absolute.keras"]
    assert "bomb" in by["bomb_ratio.keras"] and "bomb" in by["bomb_lie.keras"]
    assert "truncated" in by["trunc_half.h5"]
    assert "unknown Keras version" in by["version.keras"]
    assert "shape" in by["shape.keras"] and "shape" in by["shape.h5"]
    assert "unexpected" in by["extra_var.keras"] and "no layers/dense/vars/1" in \
        by["missing_var.keras"]
    assert "NaN" in by["nan.keras"] and "link" in by["extlink.keras"]
    assert "optimizer" in by["opt_count.keras"]
    # nothing was extracted or written anywhere
    assert not os.listdir(work) and not os.listdir(tmpd)


def test_hdf5_superblock_checks():
    from fastdrop.io import _safe
    for libver in ("earliest", "latest"):
        buf = io.BytesIO()
        with h5py.File(buf, "w", libver=libver) as f:
            f["x"] = np.arange(5.0)
        data = buf.getvalue()
        assert _safe.check_hdf5(data, "f.h5")
        with pytest.raises(ValueError, match="truncated"):
            _safe.check_hdf5(data[:len(data) - 8], "f.h5")
        with pytest.raises(ValueError, match="HDF5"):
            _safe.check_hdf5(b"\x89HDF\r\n\x1a\n\x09" + b"\0" * 100, "f.h5")
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="latest") as f:
        f["x"] = np.arange(5.0)
    bad = bytearray(buf.getvalue())
    bad[12] ^= 0x40                     # inside the checksummed superblock (v3)
    with pytest.raises(ValueError, match="checksum"):
        _safe.check_hdf5(bytes(bad), "f.h5")


def test_lookup3_known_values():
    from fastdrop.io._safe import lookup3
    # Bob Jenkins' published hashlittle test vectors (lookup3.c driver5)
    assert lookup3(b"") == 0xdeadbeef
    assert lookup3(b"", 0xdeadbeef) == 0xbd5b7dde
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xcd628161


def test_zip_member_read_capped():
    from fastdrop.io import _safe
    data = _zip([("a", zlib.compress(b"x"))])
    big = _zip([("m", b"\0" * (1 << 20))], zipfile.ZIP_DEFLATED)
    lie = _patch_declared_size(big, "m", 100)
    ar = _safe.Archive(io.BytesIO(lie), "lie.zip")
    with pytest.raises(ValueError, match="bomb|damaged|declares"):
        ar.read("m")
    assert _safe.Archive(io.BytesIO(data), "ok.zip").read("a") == zlib.compress(b"x")

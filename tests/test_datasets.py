"""Tests for fastdrop.datasets (Fashion-MNIST loaders).  Never touch the network."""
import gzip
import hashlib
import importlib.util
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

try:
    from fastdrop import datasets as ds
except ImportError:  # package not built yet: the module needs only numpy + stdlib
    _spec = importlib.util.spec_from_file_location(
        "_fastdrop_datasets_standalone",
        Path(__file__).resolve().parent.parent / "fastdrop" / "datasets.py")
    ds = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(ds)

SYSTEM = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
HAVE_SYSTEM = all((SYSTEM / (n + ".gz")).is_file() for n in NAMES)
needs_system = pytest.mark.skipif(
    not HAVE_SYSTEM,
    reason="full Fashion-MNIST not installed in %s "
           "(apt-get install dataset-fashion-mnist)" % SYSTEM)

SMALL_TRAIN, SMALL_TEST = 7150, 1000


# ---------------------------------------------------------------- helpers

def write_idx(path, arr, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09,
             np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
             np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    arr = np.asarray(arr)
    head = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(
        ">%dI" % arr.ndim, *arr.shape)
    data = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path = Path(str(path) + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_fake_set(directory, n_train=12, n_test=5, seed=0, gz=(True, False, True, False)):
    """Write a tiny IDX set (mix of .gz and plain files); return the arrays."""
    rng = np.random.RandomState(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = [rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
              rng.randint(0, 10, n_train).astype(np.uint8),
              rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
              rng.randint(0, 10, n_test).astype(np.uint8)]
    for name, arr, z in zip(NAMES, arrays, gz):
        write_idx(directory / name, arr, gz=z)
    return arrays


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only file:// downloads are allowed in this test module."""
    real_fetch = ds._fetch

    def guarded(url, dest):
        assert url.startswith("file:"), "test tried to access the network: " + url
        return real_fetch(url, dest)
    monkeypatch.setattr(ds, "_fetch", guarded)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No FASTDROP_DATA, empty cache dir, no system dir: nothing is found."""
    monkeypatch.delenv("FASTDROP_DATA", raising=False)
    monkeypatch.setattr(ds, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ds, "SYSTEM_DIR", str(tmp_path / "no-system-dir"))
    return tmp_path


def official_gz_bytes(name):
    """Rebuild the official .gz from the Debian copy.

    Debian strips the gzip header's file name and mtime; the deflate stream is
    unchanged, so restoring the header gives the byte-identical official file.
    """
    deb = (SYSTEM / (name + ".gz")).read_bytes()
    if deb[:4] != b"\x1f\x8b\x08\x00":
        pytest.skip("Debian .gz has an unexpected header")
    mtime = 1504176606 if name.startswith("train") else 1504176627
    return (b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + b"\x00\x03"
            + name.encode() + b"\x00" + deb[10:])


# ---------------------------------------------------------------- full set

@needs_system
def test_full_set_shapes_dtypes_labels():
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(path=SYSTEM, download=False)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    for a in (xtr, ytr, xte, yte):
        assert a.dtype == np.uint8 and a.flags.writeable
    assert np.array_equal(np.bincount(ytr), [6000] * 10)
    assert np.array_equal(np.bincount(yte), [1000] * 10)
    assert xtr.max() == 255 and xtr.min() == 0
    # Identical to the raw IDX payload.
    raw = gzip.decompress((SYSTEM / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert xte.tobytes() == raw[16:]
    assert ds.find_fashion_mnist(SYSTEM) == str(SYSTEM)


@needs_system
def test_system_dir_is_searched(isolated, monkeypatch):
    monkeypatch.setattr(ds, "SYSTEM_DIR", str(SYSTEM))
    assert ds.find_fashion_mnist() == str(SYSTEM)
    (xtr, _), (xte, _) = ds.fashion_mnist(download=False, flatten=True)
    assert xtr.shape == (60000, 784) and xte.shape == (10000, 784)


@needs_system
def test_hardcoded_checksums_match_official_and_debian_files(tmp_path):
    for name in NAMES:
        official = tmp_path / (name + ".gz")
        official.write_bytes(official_gz_bytes(name))
        assert ds._sha256_file(official) == ds._GZ_SHA256[name + ".gz"]
        assert ds._verify_download(official, name + ".gz")[0]
        # The recompressed Debian copy is accepted through its content hash.
        assert ds._verify_download(SYSTEM / (name + ".gz"), name + ".gz")[0]


# ---------------------------------------------------------------- small subset

def test_small_subset_offline(isolated, monkeypatch):
    def no_fetch(url, dest):
        raise AssertionError("subset='small' must not download")
    monkeypatch.setattr(ds, "_fetch", no_fetch)
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(subset="small")
    assert xtr.shape == (SMALL_TRAIN, 28, 28) and ytr.shape == (SMALL_TRAIN,)
    assert xte.shape == (SMALL_TEST, 28, 28) and yte.shape == (SMALL_TEST,)
    for a in (xtr, ytr, xte, yte):
        assert a.dtype == np.uint8 and a.flags.writeable
    assert np.array_equal(np.bincount(ytr, minlength=10), [SMALL_TRAIN // 10] * 10)
    assert np.array_equal(np.bincount(yte, minlength=10), [SMALL_TEST // 10] * 10)
    assert os.path.getsize(ds._SMALL_FILE) <= 3_000_000


def test_small_subset_indices():
    itr, ite = ds.small_subset_indices()
    assert itr.shape == (SMALL_TRAIN,) and ite.shape == (SMALL_TEST,)
    for idx, n in ((itr, 60000), (ite, 10000)):
        assert np.all(np.diff(idx) > 0)  # sorted, unique
        assert idx[0] >= 0 and idx[-1] < n


@needs_system
def test_small_subset_equals_official_images():
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(path=SYSTEM, download=False)
    (sxtr, sytr), (sxte, syte) = ds.fashion_mnist(subset="small")
    itr, ite = ds.small_subset_indices()
    assert np.array_equal(sxtr, xtr[itr]) and np.array_equal(sytr, ytr[itr])
    assert np.array_equal(sxte, xte[ite]) and np.array_equal(syte, yte[ite])


def test_small_subset_flatten():
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(subset="small", flatten=True)
    (ref, _), (ref_te, _) = ds.fashion_mnist(subset="small")
    assert xtr.shape == (SMALL_TRAIN, 784) and xte.shape == (SMALL_TEST, 784)
    assert np.array_equal(xtr, ref.reshape(-1, 784))
    assert np.array_equal(xte, ref_te.reshape(-1, 784))


def test_small_subset_corrupt_file(tmp_path, monkeypatch):
    blob = bytearray(Path(ds._SMALL_FILE).read_bytes()[:100000])
    bad = tmp_path / "bad.xz"
    bad.write_bytes(bytes(blob))
    monkeypatch.setattr(ds, "_SMALL_FILE", str(bad))
    with pytest.raises(ValueError):
        ds.fashion_mnist(subset="small")


# ---------------------------------------------------------------- locating files

def test_fastdrop_data_env_override(isolated, monkeypatch, tmp_path):
    arrays = make_fake_set(tmp_path / "fake")
    monkeypatch.setenv("FASTDROP_DATA", str(tmp_path / "fake"))
    assert ds.find_fashion_mnist() == str(tmp_path / "fake")
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(download=False)
    for got, want in zip((xtr, ytr, xte, yte), arrays):
        assert got.dtype == np.uint8 and np.array_equal(got, want)
    (fxtr, _), (fxte, _) = ds.fashion_mnist(download=False, flatten=True)
    assert fxtr.shape == (12, 784) and fxte.shape == (5, 784)
    assert np.array_equal(fxtr, arrays[0].reshape(12, 784))


def test_fastdrop_data_subdirectory_and_precedence(isolated, monkeypatch, tmp_path):
    make_fake_set(tmp_path / "root" / "fashion-mnist", n_train=3)
    make_fake_set(tmp_path / "cache", n_train=4)  # isolated CACHE_DIR
    assert ds.find_fashion_mnist() == str(tmp_path / "cache")
    monkeypatch.setenv("FASTDROP_DATA", str(tmp_path / "root"))
    assert ds.find_fashion_mnist() == str(tmp_path / "root" / "fashion-mnist")
    # An explicit path beats everything.
    make_fake_set(tmp_path / "explicit", n_train=5)
    (xtr, _), _ = ds.fashion_mnist(path=tmp_path / "explicit")
    assert len(xtr) == 5


def test_explicit_path_without_files(isolated, tmp_path):
    (tmp_path / "empty").mkdir()
    assert ds.find_fashion_mnist(tmp_path / "empty") is None
    with pytest.raises(ds.DatasetUnavailableError, match="path="):
        ds.fashion_mnist(path=tmp_path / "empty")


def test_missing_without_download(isolated):
    assert ds.find_fashion_mnist() is None
    with pytest.raises(OSError) as info:
        ds.fashion_mnist(download=False)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "FASTDROP_DATA" in msg and 'subset="small"' in msg


# ---------------------------------------------------------------- IDX validation

def test_load_idx_roundtrip_dtypes(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        for gz in (False, True):
            p = write_idx(tmp_path / ("a_%s" % np.dtype(dtype).name), arr, gz=gz)
            got = ds.load_idx(p)
            assert got.dtype == np.dtype(dtype) and got.dtype.isnative
            assert np.array_equal(got, arr) and got.flags.writeable


@pytest.mark.parametrize("mutate", ["bad_magic", "bad_type", "zero_ndim", "short_header",
                                    "truncated", "trailing", "empty",
                                    "truncated_gz", "garbage_gz"])
def test_load_idx_corrupt(tmp_path, mutate):
    good = write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8)).read_bytes()
    data = {
        "bad_magic": b"\x01" + good[1:],
        "bad_type": good[:2] + b"\x07" + good[3:],
        "zero_ndim": good[:3] + b"\x00" + good[4:],
        "short_header": good[:10],
        "truncated": good[:-1],
        "trailing": good + b"\x00",
        "empty": b"",
        "truncated_gz": gzip.compress(good)[:-20],
        "garbage_gz": b"\x1f\x8b" + b"\x00" * 50,
    }[mutate]
    p = tmp_path / "corrupt"
    p.write_bytes(data)
    with pytest.raises(ValueError):
        ds.load_idx(p)


def test_wrong_shapes_rejected(isolated, tmp_path):
    make_fake_set(tmp_path / "bad")
    write_idx(tmp_path / "bad" / "t10k-labels-idx1-ubyte",
              np.zeros(4, np.uint8))  # 5 test images, 4 labels
    (tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="labels"):
        ds.fashion_mnist(path=tmp_path / "bad")
    make_fake_set(tmp_path / "bad2")
    os.remove(tmp_path / "bad2" / "train-images-idx3-ubyte.gz")
    write_idx(tmp_path / "bad2" / "train-images-idx3-ubyte",
              np.zeros((12, 27, 27), np.uint8))
    with pytest.raises(ValueError, match="28, 28"):
        ds.fashion_mnist(path=tmp_path / "bad2")


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs, word", [
    (dict(subset="medium"), "subset"),
    (dict(subset=1), "subset"),
    (dict(flatten="yes"), "flatten"),
    (dict(download=1), "download"),
    (dict(subset="small", path="/tmp"), "path"),
])
def test_bad_arguments(kwargs, word, isolated):
    with pytest.raises(ValueError, match=word):
        ds.fashion_mnist(**kwargs)


# ---------------------------------------------------------------- download

@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    """A file:// 'server' holding a fake set, with its hashes made official."""
    server = tmp_path / "server"
    arrays = make_fake_set(server, gz=(True,) * 4)
    for name in NAMES:
        digest = hashlib.sha256((server / (name + ".gz")).read_bytes()).hexdigest()
        monkeypatch.setitem(ds._GZ_SHA256, name + ".gz", digest)
    monkeypatch.setattr(ds, "FASHION_MNIST_URL", server.as_uri() + "/")
    return server, arrays


def test_download_verified_and_atomic(isolated, fake_server):
    server, arrays = fake_server
    cache = Path(ds.CACHE_DIR)
    (xtr, ytr), (xte, yte) = ds.fashion_mnist()  # download=True by default
    for got, want in zip((xtr, ytr, xte, yte), arrays):
        assert np.array_equal(got, want)
    assert sorted(os.listdir(cache)) == sorted(n + ".gz" for n in NAMES)
    assert ds.find_fashion_mnist() == str(cache)
    # Second call uses the cache: no fetch at all.
    (server / "train-images-idx3-ubyte.gz").unlink()
    ds.fashion_mnist()


def test_download_checksum_mismatch_leaves_nothing(isolated, fake_server):
    server, _ = fake_server
    (server / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x03"))
    with pytest.raises(ds.DatasetUnavailableError, match="SHA-256 mismatch") as info:
        ds.fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    cache = Path(ds.CACHE_DIR)
    assert "train-labels-idx1-ubyte.gz" not in os.listdir(cache)
    assert not [f for f in os.listdir(cache) if f.endswith(".part")]
    assert ds.find_fashion_mnist() is None


def test_download_fetch_failure(isolated, monkeypatch):
    calls = []

    def failing_fetch(url, dest):
        calls.append(url)
        Path(dest).write_bytes(b"partial")  # a half-written temp file
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(ds, "_fetch", failing_fetch)
    with pytest.raises(OSError) as info:
        ds.fashion_mnist()
    msg = str(info.value)
    assert "no route to host" in msg and "FASTDROP_DATA" in msg
    assert 'subset="small"' in msg and "apt-get install" in msg
    assert calls and calls[0].startswith(ds.FASHION_MNIST_URL)
    # temp file removed, and no empty cache folder left behind
    assert not os.path.exists(ds.CACHE_DIR)
    assert "download=True" not in msg  # the default that just failed
    assert "no route to host" in info.value.reason


def test_download_disabled_never_fetches(isolated, monkeypatch):
    def no_fetch(url, dest):
        raise AssertionError("must not fetch")
    monkeypatch.setattr(ds, "_fetch", no_fetch)
    with pytest.raises(ds.DatasetUnavailableError, match="download=False"):
        ds.fashion_mnist(download=False)


@needs_system
def test_download_real_official_bytes(isolated, tmp_path, monkeypatch):
    """The real hard-coded hashes accept the (reconstructed) official files."""
    server = tmp_path / "official"
    server.mkdir()
    for name in NAMES:
        (server / (name + ".gz")).write_bytes(official_gz_bytes(name))
    monkeypatch.setattr(ds, "FASHION_MNIST_URL", server.as_uri() + "/")
    (xtr, ytr), (xte, yte) = ds.fashion_mnist()
    assert xtr.shape == (60000, 28, 28) and yte.shape == (10000,)
    for name in NAMES:
        assert (Path(ds.CACHE_DIR) / (name + ".gz")).read_bytes() == \
            (server / (name + ".gz")).read_bytes()

"""Fashion-MNIST loaders for fastdrop.

``fashion_mnist()`` mirrors ``keras.datasets.fashion_mnist.load_data()``: it
returns ``(x_train, y_train), (x_test, y_test)`` with ``uint8`` images of
shape ``(N, 28, 28)`` and ``uint8`` labels of shape ``(N,)`` (0..9, see
:data:`FASHION_MNIST_CLASSES`).  Pixel values are the bytes of the official
IDX files, unchanged.

Two variants are available:

* ``subset=None`` -- the full official set (60,000 train / 10,000 test),
  read from IDX files found on disk (see :func:`find_fashion_mnist`) or, if
  allowed, downloaded once into ``~/.cache/fastdrop/fashion-mnist`` with
  SHA-256 verification.
* ``subset="small"`` -- a class-balanced real subset shipped inside the
  package (``fastdrop/data/fashion-mnist-small.xz``), always available
  offline.  Its official indices are recorded (:func:`small_subset_indices`).

This module needs only numpy and the standard library.

Fashion-MNIST is Copyright (c) 2017 Zalando SE, MIT license; see
``fastdrop/data/LICENSE-fashion-mnist.txt``.
"""

import gzip
import hashlib
import json
import lzma
import os
import struct
import tempfile
import urllib.request
import zlib

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DatasetUnavailableError",
    "fashion_mnist",
    "find_fashion_mnist",
    "download_fashion_mnist",
    "load_idx",
    "small_subset_indices",
]

#: Class names, indexed by label value.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: Official download location (plain HTTP; integrity comes from SHA-256).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

#: Where downloads go, and the last place searched.
CACHE_DIR = os.path.join("~", ".cache", "fastdrop", "fashion-mnist")

#: Location used by the Debian/Ubuntu package ``dataset-fashion-mnist``.
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

# Base names of the four IDX files (stored as ``name`` or ``name.gz``).
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 and size of the official .gz files as served by FASHION_MNIST_URL
# (their MD5s match the ones published in the Fashion-MNIST README).  The
# Debian package recompresses them (gzip header without file name/mtime),
# so its .gz bytes differ while the decompressed IDX bytes are identical.
_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz":
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz":
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz":
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
# SHA-256 and size of the decompressed IDX files (identical for the official
# and the Debian copies).  A downloaded .gz is accepted if either its own
# hash or the hash of its decompressed content matches.
_IDX_SHA256 = {
    "train-images-idx3-ubyte":
        ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    "train-labels-idx1-ubyte":
        ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
    "t10k-images-idx3-ubyte":
        ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    "t10k-labels-idx1-ubyte":
        ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
}

_SMALL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "data", "fashion-mnist-small.xz")
_SMALL_MAGIC = b"FDFMNIST"
_SMALL_VERSION = 1

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}

_MAX_DOWNLOAD_BYTES = 128 * 1024 * 1024


class DatasetUnavailableError(OSError):
    """The full Fashion-MNIST set is not on disk and could not be downloaded.

    Subclass of :class:`OSError`; the message says how to get the data.  ``reason``
    (a short string, or None) says what failed, e.g. the download error.
    """

    reason = None


def _unavailable(message, reason=None):
    err = DatasetUnavailableError(message)
    err.reason = reason
    return err


def _howto(download_failed=False):
    fetch = ("or retry later: the download is about 30 MB from %s into %s"
             if download_failed else
             "or call with download=True (about 30 MB from %s into %s)")
    return ("To get the full Fashion-MNIST set: install the Debian/Ubuntu "
            "package (apt-get install dataset-fashion-mnist), or put the four "
            "IDX files (%s, optionally .gz) in a directory and set "
            "FASTDROP_DATA to it, %s. For an offline run use "
            "fashion_mnist(subset=\"small\")."
            % (", ".join(_FILES.values()),
               fetch % (FASHION_MNIST_URL, os.path.expanduser(CACHE_DIR))))


def _missing_dirs(directory):
    """The directories ``os.makedirs(directory)`` would create, deepest first."""
    out = []
    d = os.path.abspath(directory)
    while d and not os.path.exists(d):
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return out


def _remove_empty(dirs):
    """Remove the directories this download created if they are (still) empty."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            break


# ----------------------------------------------------------------------------
# IDX reading
# ----------------------------------------------------------------------------

def _open_maybe_gzip(path):
    """Open *path* for binary reading, transparently un-gzipping it."""
    f = open(path, "rb")
    try:
        head = f.read(2)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _read_exact(f, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def load_idx(path):
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Parameters
    ----------
    path : str or os.PathLike
        IDX file, e.g. ``train-images-idx3-ubyte`` or ``...-ubyte.gz``.
        Compression is detected from the content, not the file name.

    Returns
    -------
    numpy.ndarray
        Writable array whose shape is the dimensions stored in the header
        (``(N, 28, 28)`` for Fashion-MNIST images, ``(N,)`` for labels) and
        whose dtype is the native-endian version of the IDX type
        (``uint8`` for both Fashion-MNIST files).

    Raises
    ------
    ValueError
        Bad magic number, unknown type code, zero dimensions, truncated
        data, trailing bytes, or a corrupt gzip stream.
    OSError
        The file cannot be opened.
    """
    path = os.fspath(path)
    stream, raw = _open_maybe_gzip(path)
    try:
        try:
            magic = _read_exact(stream, 4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise ValueError("%s: not an IDX file (bad magic number %r)"
                                 % (path, magic))
            if magic[2] not in _IDX_DTYPES:
                raise ValueError("%s: unknown IDX data type 0x%02x"
                                 % (path, magic[2]))
            ndim = magic[3]
            if ndim == 0:
                raise ValueError("%s: IDX header has 0 dimensions" % path)
            dims_raw = _read_exact(stream, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise ValueError("%s: truncated IDX header" % path)
            shape = struct.unpack(">%dI" % ndim, dims_raw)
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            count = 1
            for d in shape:
                count *= d
            if count * dtype.itemsize > 1 << 34:
                raise ValueError("%s: implausible IDX dimensions %r"
                                 % (path, shape))
            out = np.empty(shape, dtype=dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            got = 0
            while got < view.nbytes:
                n = stream.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < view.nbytes:
                raise ValueError("%s: truncated IDX data (%d of %d bytes, "
                                 "shape %r)" % (path, got, view.nbytes, shape))
            if stream.read(1):
                raise ValueError("%s: trailing bytes after IDX data of shape %r"
                                 % (path, shape))
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ValueError("%s: corrupt gzip data (%s)" % (path, exc)) from exc
    finally:
        stream.close()
        raw.close()
    if dtype.itemsize > 1:
        out = out.astype(dtype.newbyteorder("="))
    return out


# ----------------------------------------------------------------------------
# Locating / downloading the full set
# ----------------------------------------------------------------------------

def _resolve_files(directory):
    """Return {key: filepath} if *directory* holds all four files, else None."""
    if not directory or not os.path.isdir(directory):
        return None
    found = {}
    for key, base in _FILES.items():
        for name in (base, base + ".gz"):
            p = os.path.join(directory, name)
            if os.path.isfile(p):
                found[key] = p
                break
        else:
            return None
    return found


def _search_dirs():
    """Default search locations, in order (no explicit path)."""
    dirs = []
    env = os.environ.get("FASTDROP_DATA")
    if env:
        env = os.path.expanduser(env)
        dirs += [env, os.path.join(env, "fashion-mnist")]
    dirs += [os.path.expanduser(CACHE_DIR), SYSTEM_DIR]
    return dirs


def find_fashion_mnist(path=None):
    """Locate a directory holding the full Fashion-MNIST IDX files.

    A directory qualifies if it contains all four files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each either
    uncompressed or with a ``.gz`` suffix.  Only the presence of the files is
    checked (cheap); they are validated when loaded.

    Search order: *path* (if given, it is the only place searched), then
    ``$FASTDROP_DATA`` (or ``$FASTDROP_DATA/fashion-mnist``),
    ``~/.cache/fastdrop/fashion-mnist``, and
    ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``).

    Returns
    -------
    str or None
        The directory, or ``None`` if the full set is not available locally.
    """
    if path is not None:
        path = os.path.expanduser(os.fspath(path))
        return path if _resolve_files(path) else None
    for d in _search_dirs():
        if _resolve_files(d):
            return d
    return None


def _fetch(url, dest):
    """Download *url* to the local file *dest* (overwriting it).

    Kept as a separate module-level function so tests can replace it; it does
    no verification itself.  ``file://`` URLs work too.
    """
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
        total = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > _MAX_DOWNLOAD_BYTES:
                raise OSError("%s: response larger than %d bytes"
                              % (url, _MAX_DOWNLOAD_BYTES))
            out.write(chunk)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_download(path, gz_name):
    """Return (ok, actual_sha256) for a downloaded official .gz file."""
    actual = _sha256_file(path)
    if actual == _GZ_SHA256[gz_name]:
        return True, actual
    # Fall back to the decompressed content (a mirror may recompress).
    want, size = _IDX_SHA256[gz_name[:-3]]
    h = hashlib.sha256()
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                n += len(chunk)
                if n > size:
                    return False, actual
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        return False, actual
    return (n == size and h.hexdigest() == want), actual


def download_fashion_mnist(directory=None, base_url=None):
    """Download the four official Fashion-MNIST ``.gz`` files.

    Each file is fetched into a temporary file in *directory*, checked
    against its hard-coded SHA-256, and only then moved into place with
    :func:`os.replace`, so an interrupted or corrupt download never leaves a
    file under the final name.  Files already present and valid are kept.

    Parameters
    ----------
    directory : str, optional
        Target directory (created if needed); default
        ``~/.cache/fastdrop/fashion-mnist``.
    base_url : str, optional
        Base URL ending in ``/``; default :data:`FASHION_MNIST_URL`.

    Returns
    -------
    str
        The directory holding the four files.

    Raises
    ------
    DatasetUnavailableError
        (an :class:`OSError`) on any network/IO failure or checksum mismatch;
        the message explains how to obtain the data otherwise.
    """
    directory = os.path.expanduser(directory or CACHE_DIR)
    base_url = base_url or FASHION_MNIST_URL
    created = _missing_dirs(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise _unavailable(
            "Cannot create download directory %s (%s). %s"
            % (directory, exc, _howto(download_failed=True)),
            "cannot create %s: %s" % (directory, exc)) from exc
    try:
        _download_into(directory, base_url)
    except BaseException:
        # a failed download leaves no empty cache folder behind (files that were
        # downloaded and verified before the failure are kept for the next try)
        _remove_empty(created)
        raise
    return directory


def _download_into(directory, base_url):
    for base in _FILES.values():
        gz_name = base + ".gz"
        final = os.path.join(directory, gz_name)
        if os.path.isfile(final) and _verify_download(final, gz_name)[0]:
            continue
        url = base_url + gz_name
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix="." + gz_name + ".",
                                       suffix=".part", dir=directory)
            os.close(fd)
            _fetch(url, tmp)
            ok, actual = _verify_download(tmp, gz_name)
            if not ok:
                raise _unavailable(
                    "SHA-256 mismatch for %s downloaded from %s: got %s, "
                    "expected %s. The download was discarded. %s"
                    % (gz_name, url, actual, _GZ_SHA256[gz_name],
                       _howto(download_failed=True)),
                    "SHA-256 mismatch for %s from %s" % (gz_name, url))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp uses 0600
            os.replace(tmp, final)
            tmp = None
        except DatasetUnavailableError:
            raise
        except Exception as exc:  # urllib raises URLError/HTTPError/timeouts
            raise _unavailable(
                "Downloading %s failed: %s. %s"
                % (url, exc, _howto(download_failed=True)),
                "downloading %s failed: %s" % (url, exc)) from exc
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)


# ----------------------------------------------------------------------------
# Public loader
# ----------------------------------------------------------------------------

def _check_pair(x, y, split, path):
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError("%s: %s images must be uint8 of shape (N, 28, 28), "
                         "got %s %r" % (path, split, x.dtype, x.shape))
    if y.dtype != np.uint8 or y.ndim != 1:
        raise ValueError("%s: %s labels must be uint8 of shape (N,), got %s %r"
                         % (path, split, y.dtype, y.shape))
    if len(x) != len(y):
        raise ValueError("%s: %d %s images but %d labels"
                         % (path, len(x), split, len(y)))
    if y.size and int(y.max()) > 9:
        raise ValueError("%s: %s label %d out of range 0..9"
                         % (path, split, int(y.max())))


def _load_full(path, download):
    if path is not None:
        directory = find_fashion_mnist(path)
        if directory is None:
            raise DatasetUnavailableError(
                "path=%r does not contain the four Fashion-MNIST IDX files "
                "(%s, optionally .gz). %s"
                % (os.fspath(path), ", ".join(_FILES.values()), _howto()))
    else:
        directory = find_fashion_mnist()
        if directory is None:
            if not download:
                raise DatasetUnavailableError(
                    "Fashion-MNIST full set not found (searched: %s) and "
                    "download=False. %s" % (", ".join(_search_dirs()), _howto()))
            directory = download_fashion_mnist()
    files = _resolve_files(directory)
    arrays = {k: load_idx(p) for k, p in files.items()}
    xtr, ytr = arrays["train_images"], arrays["train_labels"]
    xte, yte = arrays["test_images"], arrays["test_labels"]
    _check_pair(xtr, ytr, "train", directory)
    _check_pair(xte, yte, "test", directory)
    return (xtr, ytr), (xte, yte)


def _read_small():
    """Decode the embedded subset file. Returns (header, split, index, label, images)."""
    with open(_SMALL_FILE, "rb") as f:
        blob = f.read()
    try:
        payload = lzma.decompress(blob, format=lzma.FORMAT_XZ)
    except lzma.LZMAError as exc:
        raise ValueError("%s: corrupt subset file (%s)" % (_SMALL_FILE, exc)) from exc
    if payload[:8] != _SMALL_MAGIC or len(payload) < 12:
        raise ValueError("%s: bad magic number" % _SMALL_FILE)
    (hlen,) = struct.unpack("<I", payload[8:12])
    header = json.loads(payload[12:12 + hlen].decode("utf-8"))
    if header.get("version") != _SMALL_VERSION:
        raise ValueError("%s: unsupported subset file version %r"
                         % (_SMALL_FILE, header.get("version")))
    m = header["n_train"] + header["n_test"]
    pos = 12 + hlen
    buf = memoryview(payload)
    if len(payload) != pos + m * (1 + 2 + 1 + 784):
        raise ValueError("%s: size does not match header" % _SMALL_FILE)
    split = np.frombuffer(buf, np.uint8, m, pos); pos += m
    index = np.frombuffer(buf, "<u2", m, pos).astype(np.int64); pos += 2 * m
    label = np.frombuffer(buf, np.uint8, m, pos); pos += m
    images = np.frombuffer(buf, np.uint8, m * 784, pos).reshape(m, 28, 28)
    return header, split, index, label, images


def _small_arrays():
    header, split, index, label, images = _read_small()
    out = []
    for code, n in ((0, header["n_train"]), (1, header["n_test"])):
        sel = np.flatnonzero(split == code)
        if len(sel) != n:
            raise ValueError("%s: split sizes do not match header" % _SMALL_FILE)
        sel = sel[np.argsort(index[sel], kind="stable")]
        # Fancy indexing copies: the returned arrays are writable and own data.
        out.append((images[sel], label[sel].copy(), index[sel]))
    return out


def small_subset_indices():
    """Official indices of the embedded ``subset="small"`` images.

    Returns
    -------
    (train_idx, test_idx) : tuple of numpy.ndarray
        Sorted ``int64`` arrays; ``fashion_mnist(subset="small")`` returns
        exactly ``x_train_full[train_idx]`` / ``x_test_full[test_idx]`` (and
        the matching labels), in that order.
    """
    (_, _, itr), (_, _, ite) = _small_arrays()
    return itr, ite


def fashion_mnist(subset=None, flatten=False, path=None, download=True):
    """Load Fashion-MNIST like ``keras.datasets.fashion_mnist.load_data()``.

    Parameters
    ----------
    subset : None or str
        ``None`` (or ``"full"``): the full official set, 60,000 train and
        10,000 test images.  ``"small"``: the embedded class-balanced subset
        of real images shipped with fastdrop (works offline; 7,150 train =
        715 per class and 1,000 test = 100 per class, see
        :func:`small_subset_indices`).
    flatten : bool
        If true, images are returned with shape ``(N, 784)`` instead of
        ``(N, 28, 28)``.
    path : str or os.PathLike, optional
        Directory with the four IDX files (plain or ``.gz``); only valid with
        the full set.  When given, no other location is searched and nothing
        is downloaded.  Otherwise see :func:`find_fashion_mnist`.
    download : bool
        Full set only: if it is not found locally, download the official
        files into ``~/.cache/fastdrop/fashion-mnist`` (SHA-256 verified).
        With ``download=False`` a missing set raises instead.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test))
        ``x_*``: ``uint8`` arrays of shape ``(N, 28, 28)`` (or ``(N, 784)``),
        values 0..255, identical to the official IDX bytes.
        ``y_*``: ``uint8`` arrays of shape ``(N,)`` with labels 0..9
        (names in :data:`FASHION_MNIST_CLASSES`).

    Raises
    ------
    ValueError
        Unknown ``subset``, non-bool ``flatten``/``download``, ``path`` used
        with ``subset="small"``, or a corrupt data file.
    DatasetUnavailableError
        (an :class:`OSError`) the full set is missing and could not be
        downloaded; the message says how to get it.
    """
    if subset not in (None, "full", "small"):
        raise ValueError("subset must be None, 'full' or 'small', got %r"
                         % (subset,))
    if not isinstance(flatten, (bool, np.bool_)):
        raise ValueError("flatten must be a bool, got %r" % (flatten,))
    if not isinstance(download, (bool, np.bool_)):
        raise ValueError("download must be a bool, got %r" % (download,))
    if subset == "small":
        if path is not None:
            raise ValueError("path is only used with the full set (subset=None); "
                             "the small subset is embedded in the package")
        (xtr, ytr, _), (xte, yte, _) = _small_arrays()
    else:
        (xtr, ytr), (xte, yte) = _load_full(path, download)
    if flatten:
        xtr = xtr.reshape(len(xtr), -1)
        xte = xte.reshape(len(xte), -1)
    return (xtr, ytr), (xte, yte)

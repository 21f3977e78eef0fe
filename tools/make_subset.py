#!/usr/bin/env python3
"""Regenerate fastdrop/data/fashion-mnist-small.xz from the full Fashion-MNIST.

The embedded subset is a class-balanced sample of the official train and test
sets.  Selection (reproducible, numpy.random.RandomState is a frozen stream):

    rs = RandomState(seed); for class c = 0..9 in order:
        perm_c = rs.permutation(official indices with label c)
    take the first K of each perm_c (so a larger K extends a smaller one).

Container (one xz stream, CRC64-checked; LZMA2 preset 9e, lc=4 lp=0 pb=0):

    b"FDFMNIST" | uint32 LE header length | JSON header (utf-8)
    | split  uint8[M]   (0 = train, 1 = test)
    | index  uint16 LE[M] (official index inside its split)
    | label  uint8[M]
    | images uint8[M, 28, 28]

Images are stored grouped by class and, inside a class, in greedy
nearest-neighbour (L1, exact integer arithmetic) chain order, which helps LZMA
find long matches (~2 % smaller than official order).  The loader sorts by
(split, index) again, so the order is invisible to users.

Usage:
    python tools/make_subset.py                 # default sizes, write file
    python tools/make_subset.py --search        # largest K under --max-bytes
    python tools/make_subset.py --source DIR --train-per-class 700
"""

import argparse
import importlib.util
import json
import lzma
import os
import struct
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "fastdrop", "data", "fashion-mnist-small.xz")
TRAIN_PER_CLASS = 715
TEST_PER_CLASS = 100
SEED_TRAIN = 0
SEED_TEST = 1
MAX_BYTES = 3_000_000
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
            "lc": 4, "lp": 0, "pb": 0}]


def load_datasets_module():
    """Import fastdrop/datasets.py by path (no need to build the package)."""
    path = os.path.join(ROOT, "fastdrop", "datasets.py")
    spec = importlib.util.spec_from_file_location("_fastdrop_datasets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def class_permutations(y, seed):
    rs = np.random.RandomState(seed)
    return [rs.permutation(np.flatnonzero(y == c)) for c in range(10)]


def pick(perms, k):
    for p in perms:
        if len(p) < k:
            raise SystemExit("only %d images in a class, asked for %d" % (len(p), k))
    return np.sort(np.concatenate([p[:k] for p in perms]))


def l1_chain(v):
    """Greedy nearest-neighbour order of the rows of v (exact, deterministic)."""
    v = v.astype(np.int32)
    n = len(v)
    used = np.zeros(n, bool)
    cur = int(np.argmin(v.sum(1)))
    order = []
    for _ in range(n):
        used[cur] = True
        order.append(cur)
        if len(order) == n:
            break
        d = np.abs(v - v[cur]).sum(1)
        d[used] = np.iinfo(np.int32).max
        cur = int(np.argmin(d))
    return np.array(order, dtype=np.int64)


def build(xtr, ytr, xte, yte, itr, ite, meta):
    split = np.concatenate([np.zeros(len(itr), np.uint8), np.ones(len(ite), np.uint8)])
    index = np.concatenate([itr, ite])
    label = np.concatenate([ytr[itr], yte[ite]])
    images = np.concatenate([xtr[itr], xte[ite]]).reshape(len(index), 784)
    order = np.concatenate([
        np.flatnonzero(label == c)[l1_chain(images[label == c])] for c in range(10)])
    split, index, label, images = split[order], index[order], label[order], images[order]
    header = dict(meta, version=1, n_train=int(len(itr)), n_test=int(len(ite)))
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    payload = b"".join([b"FDFMNIST", struct.pack("<I", len(hbytes)), hbytes,
                        split.tobytes(), index.astype("<u2").tobytes(),
                        label.tobytes(), np.ascontiguousarray(images).tobytes()])
    return lzma.compress(payload, format=lzma.FORMAT_XZ,
                         check=lzma.CHECK_CRC64, filters=FILTERS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", help="directory with the full IDX files "
                    "(default: fastdrop.datasets.find_fashion_mnist())")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS)
    ap.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    ap.add_argument("--seed-train", type=int, default=SEED_TRAIN)
    ap.add_argument("--seed-test", type=int, default=SEED_TEST)
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    ap.add_argument("--search", action="store_true",
                    help="find the largest train-per-class fitting --max-bytes")
    args = ap.parse_args(argv)

    ds = load_datasets_module()
    (xtr, ytr), (xte, yte) = ds.fashion_mnist(path=args.source, download=False) \
        if args.source else ds.fashion_mnist(download=False)
    ptr = class_permutations(ytr, args.seed_train)
    pte = class_permutations(yte, args.seed_test)
    ite = pick(pte, args.test_per_class)
    meta = {
        "source": "Fashion-MNIST, Copyright (c) 2017 Zalando SE, MIT license",
        "selection": "numpy.random.RandomState(seed).permutation of each "
                     "class's official indices (classes 0..9 in order); "
                     "first k per class",
        "seed_train": args.seed_train, "seed_test": args.seed_test,
        "train_per_class": None, "test_per_class": args.test_per_class,
    }

    def attempt(k):
        t = time.time()
        blob = build(xtr, ytr, xte, yte, pick(ptr, k), ite,
                     dict(meta, train_per_class=k))
        print("train_per_class=%d test_per_class=%d -> %d bytes (%.1f s)"
              % (k, args.test_per_class, len(blob), time.time() - t))
        return blob

    k = args.train_per_class
    if args.search:
        lo, hi = 1, 1000          # invariant: lo fits, hi does not
        best = (lo, attempt(lo))
        if len(best[1]) > args.max_bytes:
            raise SystemExit("even 1 image per class exceeds --max-bytes")
        if len(attempt(hi)) <= args.max_bytes:
            raise SystemExit("upper bound %d/class unexpectedly fits" % hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            blob = attempt(mid)
            if len(blob) <= args.max_bytes:
                lo, best = mid, (mid, blob)
            else:
                hi = mid
        k, blob = best
    else:
        blob = attempt(k)
        if len(blob) > args.max_bytes:
            raise SystemExit("%d bytes exceeds --max-bytes=%d"
                             % (len(blob), args.max_bytes))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)),
                               suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; package data must be world-readable
    os.replace(tmp, args.out)

    # Round-trip check through the real loader.
    ds._SMALL_FILE = os.path.abspath(args.out)
    t = time.time()
    (sxtr, sytr), (sxte, syte) = ds.fashion_mnist(subset="small")
    dt = time.time() - t
    itr_chk, ite_chk = ds.small_subset_indices()
    assert np.array_equal(itr_chk, pick(ptr, k)) and np.array_equal(ite_chk, ite)
    assert np.array_equal(sxtr, xtr[itr_chk]) and np.array_equal(sytr, ytr[itr_chk])
    assert np.array_equal(sxte, xte[ite_chk]) and np.array_equal(syte, yte[ite_chk])
    print("wrote %s: %d bytes, %d train (%d/class) + %d test (%d/class), "
          "load %.3f s, verified" % (args.out, len(blob), len(sxtr), k,
                                     len(sxte), args.test_per_class, dt))
    return 0


if __name__ == "__main__":
    sys.exit(main())

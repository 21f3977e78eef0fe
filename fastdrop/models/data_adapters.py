"""Data pipelines for ``fit``/``evaluate``/``predict``, as Keras 3's
``keras/src/trainers/data_adapters``: in place of arrays the loops take

* a Python generator (or any iterator) yielding ``(x, y)``, ``(x, y, sample_weight)``
  or, for ``predict``, ``x`` / ``(x,)`` — read once: a finite generator is one pass, an
  endless one needs ``steps_per_epoch``;
* a ``PyDataset``-style sequence (``fastdrop.utils.PyDataset``, ``keras.utils.PyDataset``
  or any non-array object with ``__len__`` and ``__getitem__`` returning a batch), with
  ``on_epoch_begin``/``on_epoch_end`` and the ``workers``/``use_multiprocessing``/
  ``max_queue_size`` of its constructor (batches read ahead by a pool, in order);
* a PyTorch ``DataLoader`` (recognised by its class, torch is never imported here).

Batches are read one at a time and converted as arrays are (``Inputs``); nothing holds
the whole data set.  The steps of an epoch follow Keras's ``EpochIterator``: without
``steps_per_epoch`` an epoch is one pass; with it the iterator carries on across epochs
(a sequence or DataLoader starts a new pass when one ends), and a source that runs out
first ends the epoch with a warning.  A Python generator is read once: an epoch that
finds it exhausted stops training with that warning (Keras 3 would replay its first two
batches).  Each batch trains with the dropout keys of the array path — the global step
and the row in the batch — and MC prediction keys each sample by its running index, so
the same batches give the same results as arrays.
"""
import array
import collections
import concurrent.futures
import itertools
import multiprocessing
import numbers
import os
import types
import warnings

import numpy as np

from .. import random as _random
from ._args import _int_arg

_RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your "
            "dataset or generator can generate at least `steps_per_epoch * epochs` "
            "batches.")


# ------------------------------------------------------------------ recognising
def _mro_has(x, names, module_part):
    return any(c.__name__ in names and module_part in str(c.__module__)
               for c in type(x).__mro__)


def is_torch_dataloader(x):
    return _mro_has(x, ("DataLoader",), "torch.utils.data")


def _array_like(x):
    return isinstance(x, (np.ndarray, list, tuple, str, bytes, bytearray, memoryview, dict,
                          range, collections.deque, array.array)) or \
        hasattr(x, "__array__") or hasattr(x, "__array_interface__") or hasattr(x, "shape")


def is_py_dataset(x):
    from ..utils import PyDataset
    if isinstance(x, PyDataset) or _mro_has(x, ("PyDataset", "Sequence", "PyDatasetAdapter"),
                                           "keras"):
        return True
    t = type(x)
    return not _array_like(x) and hasattr(t, "__getitem__") and hasattr(t, "__len__") \
        and not _mro_has(x, ("Dataset",), "torch.utils.data")


def is_iterator(x):
    if isinstance(x, types.GeneratorType):
        return True
    t = type(x)
    return hasattr(t, "__next__") and hasattr(t, "__iter__") and not _array_like(x)


def is_source(x):
    """True for the inputs this module reads (not arrays or array-likes)."""
    if x is None or isinstance(x, np.ndarray):
        return False
    return is_iterator(x) or is_torch_dataloader(x) or is_py_dataset(x)


class _Chain:
    """``first``, then the rest of the epoch generator ``gen``; ``close()`` closes ``gen``
    (its ``finally``: the source's ``on_epoch_end``) even before the first batch is read."""

    def __init__(self, first, gen):
        self._first = [first]
        self._gen = gen

    def __iter__(self):
        return self

    def __next__(self):
        if self._first:
            return self._first.pop()
        return next(self._gen)

    def close(self):
        self._first = []
        self._gen.close()


# ------------------------------------------------------------------- adapters
def _to_numpy(v):
    """A batch leaf as something ``np.asarray`` takes (torch tensors: detached, on CPU)."""
    if v is not None and hasattr(v, "detach") and hasattr(v, "cpu") and hasattr(v, "numpy"):
        return v.detach().cpu().numpy()
    return v


def _unpack(batch, kind, k):
    """(x, y, sample_weight) of one batch, as Keras's ``unpack_x_y_sample_weight``."""
    if isinstance(batch, dict):
        raise ValueError(f"batch {k} of the {kind} is a dict: fastdrop models have one input "
                         "and one output; yield (x, y) or (x, y, sample_weight) tuples")
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        batch = (batch,)
    if not 1 <= len(batch) <= 3:
        raise ValueError(f"batch {k} of the {kind} must be x, (x,), (x, y) or "
                         f"(x, y, sample_weight); got a tuple of {len(batch)} elements")
    batch = tuple(_to_numpy(v) for v in batch) + (None,) * (3 - len(batch))
    return batch


class _Adapter:
    """One kind of source.  ``num_batches``: batches in one pass (None: unknown)."""
    kind = "data"
    num_batches = None
    once = False                # a Python generator / iterator: one pass, ever

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass

    def new_pass(self, order_seed):
        raise NotImplementedError

    def close(self):
        pass


class GeneratorAdapter(_Adapter):
    """A Python generator or iterator: one pass, read as it comes."""
    kind = "generator"
    once = True

    def __init__(self, gen):
        self._it = iter(gen)

    def new_pass(self, order_seed):
        return self._it


class TorchDataLoaderAdapter(_Adapter):
    """A ``torch.utils.data.DataLoader``: a new iteration per pass."""
    kind = "torch DataLoader"

    def __init__(self, loader):
        self._loader = loader
        try:
            self.num_batches = len(loader)
        except TypeError:           # an IterableDataset without __len__
            self.num_batches = None

    def new_pass(self, order_seed):
        return iter(self._loader)


def _get_index(i):
    return _WORKER_DATASET[i]


_WORKER_DATASET = None


def _init_worker(ds):
    global _WORKER_DATASET
    _WORKER_DATASET = ds


class PyDatasetAdapter(_Adapter):
    """A ``PyDataset``-style sequence: ``ds[i]`` for the indices of each epoch, read ahead
    by ``ds.workers`` threads (or processes with ``ds.use_multiprocessing``) at most
    ``ds.max_queue_size`` batches ahead, in order."""
    kind = "PyDataset"

    def __init__(self, ds, shuffle):
        self.ds = ds
        n = getattr(type(ds), "num_batches", None)
        try:
            n = ds.num_batches if n is not None else len(ds)
        except NotImplementedError:
            n = len(ds)
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"the PyDataset's length (num_batches) must be an integer >= 0 "
                                 f"or None, got {n!r}")
            if n == 0:
                raise ValueError("the PyDataset has no batches (its length is 0)")
        self.num_batches = None if n is None else int(n)
        self.shuffle = bool(shuffle) and n is not None
        workers = getattr(ds, "workers", 1)
        workers = 1 if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
            raise ValueError(f"the PyDataset's workers must be an integer >= 0, got {workers!r}")
        self.workers = int(workers)
        self.use_multiprocessing = bool(getattr(ds, "use_multiprocessing", False))
        q = getattr(ds, "max_queue_size", 10)
        q = 10 if q is None else q
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or q < 1:
            raise ValueError(f"the PyDataset's max_queue_size must be an integer >= 1, got {q!r}")
        self.max_queue_size = int(q)
        self._pool = None

    def on_epoch_begin(self):
        f = getattr(self.ds, "on_epoch_begin", None)
        if f is not None:
            f()

    def on_epoch_end(self):
        self._stop_pool()
        f = getattr(self.ds, "on_epoch_end", None)
        if f is not None:
            f()

    def order(self, order_seed):
        n = self.num_batches
        if self.shuffle:       # Keras shuffles the batch order of each pass
            return np.random.default_rng(order_seed).permutation(n)
        return None

    def read(self, indices):
        """ds[i] for i in indices, in order, prefetched when workers ask for it."""
        if self.workers <= 1 and not (self.workers == 1 and self.use_multiprocessing):
            for i in indices:
                yield self.ds[int(i)]
            return
        pool = self._start_pool()
        fn = _get_index if self.use_multiprocessing else self.ds.__getitem__
        pending = collections.deque()
        it = iter(indices)
        try:
            for i in itertools.islice(it, self.max_queue_size):
                pending.append(pool.submit(fn, int(i)))
            while pending:
                batch = pending.popleft().result()
                for i in itertools.islice(it, 1):
                    pending.append(pool.submit(fn, int(i)))
                yield batch
        finally:
            for f in pending:
                f.cancel()

    def _start_pool(self):
        if self._pool is None:
            if self.use_multiprocessing:
                methods = multiprocessing.get_all_start_methods()
                ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_init_worker,
                    initargs=(self.ds,))
            else:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="fastdrop-pydataset")
        return self._pool

    def _stop_pool(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self):
        self._stop_pool()


def adapter(x, y=None, sample_weight=None, shuffle=False, what="fit", arg="x"):
    """The adapter for x when it is a generator, PyDataset or DataLoader, else None.
    ``y``/``sample_weight`` must then be None (they come in the batches), as in Keras."""
    if not is_source(x):
        if x is not None and _mro_has(x, ("Dataset", "IterableDataset"), "torch.utils.data"):
            raise TypeError(f"{arg} is a torch Dataset, which gives single samples: wrap it in "
                            "torch.utils.data.DataLoader(dataset, batch_size=...)")
        return None
    if is_torch_dataloader(x):
        ad = TorchDataLoaderAdapter(x)
    elif is_iterator(x):
        ad = GeneratorAdapter(x)
    else:
        ad = PyDatasetAdapter(x, shuffle)
    for name, v, desc in (("y", y, "the targets"), ("sample_weight", sample_weight,
                                                     "the sample weights")):
        if v is not None:
            raise ValueError(f"when {arg} is a {ad.kind}, {name} must not be given to {what}(): "
                             f"{desc} come in its batches ((x, y) or (x, y, sample_weight))")
    if shuffle and arg == "x" and not isinstance(ad, PyDatasetAdapter):
        warnings.warn(f"`shuffle=True` was passed, but will be ignored since the data `x` was "
                      f"provided as a {ad.kind}; it is expected to yield already-shuffled "
                      "data.", stacklevel=4)
    return ad


# --------------------------------------------------------------- the epochs
class EpochIterator:
    """The batches of each epoch of one source, as Keras's ``EpochIterator``.

    ``epoch()`` returns an iterator over the epoch's raw batches (None when a Python
    generator is already exhausted); the source's ``on_epoch_begin``/``on_epoch_end``
    run around it (``on_epoch_end`` also when the epoch is closed early)."""

    def __init__(self, ad, steps_per_epoch=None, seed=0, arg="steps_per_epoch"):
        self.ad = ad
        self.steps_per_epoch = None if steps_per_epoch is None else \
            _int_arg(steps_per_epoch, arg)
        if self.steps_per_epoch is None and isinstance(ad, PyDatasetAdapter) and \
                ad.num_batches is None:
            raise ValueError(f"the PyDataset is endless (num_batches is None): give {arg}")
        self.seed = seed
        self._it = None              # the pass carried across epochs (steps_per_epoch)
        self._seen = 0               # batches read from the current pass
        self._order = None
        self._in_pass = False
        self._passes = 0
        self.exhausted = False       # a Python generator that has run out
        self.steps_done = 0          # batches of the last epoch

    @property
    def num_batches(self):
        """Steps per epoch for the progress bar and callbacks (None: unknown)."""
        return self.steps_per_epoch or self.ad.num_batches

    def epoch(self, step_key=0, ran_out=_RAN_OUT):
        """Iterator over this epoch's batches (a generator: ``close()`` ends the epoch);
        None, with the warning ``ran_out`` (if any), when the source has run out."""
        if self.exhausted:
            if ran_out:
                warnings.warn(ran_out, stacklevel=3)
            return None
        gen = self._epoch(step_key)
        try:
            first = next(gen)
        except StopIteration:
            self.exhausted = self.exhausted or self.ad.once
            if ran_out:
                warnings.warn(ran_out, stacklevel=3)
            return None
        return _Chain(first, gen)

    def _epoch(self, step_key):
        ad = self.ad
        spe = self.steps_per_epoch
        n = ad.num_batches
        self.steps_done = 0
        ad.on_epoch_begin()
        try:
            if isinstance(ad, PyDatasetAdapter):
                yield from self._sequence_epoch(step_key)
                return
            if spe is None:
                # one pass (a fresh iteration of a DataLoader; the rest of a generator)
                for batch in ad.new_pass(None):
                    self.steps_done += 1
                    yield batch
                self.exhausted = ad.once
                return
            if self._it is None:
                self._it = iter(ad.new_pass(None))
                self._seen = 0
            for _ in range(spe):
                if n is not None and self._seen >= n:
                    warnings.warn(_RAN_OUT, stacklevel=2)
                    break
                try:
                    batch = next(self._it)
                except StopIteration:
                    warnings.warn(_RAN_OUT, stacklevel=2)
                    self._it = None
                    self.exhausted = ad.once
                    return
                self._seen += 1
                self.steps_done += 1
                yield batch
            if n is not None and self._seen >= n:
                self._it = None
        finally:
            ad.on_epoch_end()

    def _sequence_epoch(self, step_key):
        ad = self.ad
        spe = self.steps_per_epoch
        n = ad.num_batches
        if n is None:                                  # endless: indices run on
            lo = self._seen
            self._seen += spe
            indices = range(lo, lo + spe)
        else:
            if not self._in_pass or spe is None:       # a new pass
                self._order = ad.order(_random.derive(self.seed, _random.KEY_SHUFFLE,
                                                      step_key, self._passes))
                self._passes += 1
                self._seen = 0
                self._in_pass = True
            lo = self._seen
            count = n - lo if spe is None else min(spe, n - lo)
            if spe is not None and spe > n - lo:
                warnings.warn(_RAN_OUT, stacklevel=3)
            self._seen += count
            indices = range(lo, lo + count) if self._order is None else \
                self._order[lo:lo + count]
            if self._seen >= n:
                self._in_pass, self._seen = False, 0
        for batch in ad.read(indices):
            self.steps_done += 1
            yield batch


# ------------------------------------------------------------- model batches
class Batches:
    """Raw batches -> (x, y, w) converted and checked as arrays are (the model built from
    the first batch if needed, its buffers sized for each batch).  ``samples``: rows
    given so far; ``close()`` closes the source's epoch."""

    def __init__(self, model, raw, kind, need_y, class_weight=None):
        self.model = model
        self.raw = raw
        self.kind = kind
        self.need_y = need_y
        self.class_weight = class_weight
        self.k = 0
        self.samples = 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.raw)
        k = self.k
        self.k += 1
        x, y, sw = _unpack(batch, self.kind, k)
        if self.need_y and y is None:
            raise ValueError(f"batch {k} of the {self.kind} has no targets: fit and evaluate "
                             "need (x, y) or (x, y, sample_weight) batches")
        model = self.model
        try:
            x, y, w = model._inputs(x, y, sw, self.class_weight)
        except (ValueError, TypeError) as e:
            raise type(e)(f"batch {k} of the {self.kind}: {e}") from None
        model._ensure(x.shape[1:], x.shape[0])
        self.samples += x.shape[0]
        return x, y, w

    def close(self):
        close = getattr(self.raw, "close", None)
        if close is not None:
            close()


def open_source(model, ad, steps, what, arg="steps_per_epoch", step_key=0):
    """(EpochIterator, the first epoch's raw batches, (x, y, sample_weight) of its first
    batch): the loops check the model and the loss on that batch as on arrays, then read
    every batch (the first one again) from the iterator."""
    ep = EpochIterator(ad, steps, model.seed, arg)
    raw = ep.epoch(step_key, ran_out=None)
    if raw is None:
        raise ValueError(f"the {ad.kind} given to {what}() yields no batches")
    first = next(raw)
    x, y, sw = _unpack(first, ad.kind, 0)
    if what != "predict" and y is None:
        raise ValueError(f"batch 0 of the {ad.kind} has no targets: {what} needs (x, y) or "
                         "(x, y, sample_weight) batches")
    raw._first.append(first)          # read again by the loop
    return ep, raw, (x, y, sw)


def predict(model, x, batch_size=None, steps=None):
    """``predict`` over a source: the outputs of every batch, concatenated."""
    ad = adapter(x, what="predict")
    ei = EpochIterator(ad, steps, model.seed, "steps")
    batches = ei.epoch(ran_out=None)
    outs = []
    if batches is not None:
        for k, batch in enumerate(batches):
            xb = _unpack(batch, ad.kind, k)[0]
            try:
                outs.append(model._predict(xb, batch_size))
            except (ValueError, TypeError) as e:
                raise type(e)(f"batch {k} of the {ad.kind}: {e}") from None
    ad.close()
    if not outs:
        raise ValueError(f"the {ad.kind} given to predict() yields no batches")
    return np.concatenate(outs, axis=0)


def mc_moments(model, x, mc_samples, seed, batch_size, steps=None):
    """``_mc_moments`` over a source: each batch's moments with its samples keyed by their
    running index (as the rows of one array), concatenated."""
    from .mc import _mc_moments
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, numbers.Integral) \
            or mc_samples < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    ad = adapter(x, what="predict")
    ei = EpochIterator(ad, steps, model.seed, "steps")
    batches = ei.epoch(ran_out=None)
    parts = []
    offset = 0
    if batches is not None:
        for k, batch in enumerate(batches):
            xb = _unpack(batch, ad.kind, k)[0]
            try:
                res = _mc_moments(model, xb, mc_samples, seed, batch_size, offset=offset)
            except (ValueError, TypeError) as e:
                raise type(e)(f"batch {k} of the {ad.kind}: {e}") from None
            offset += res[0].shape[0]
            parts.append(res)
    ad.close()
    if not parts:
        raise ValueError(f"the {ad.kind} given to predict() yields no batches")
    return tuple(np.concatenate([p[i] for p in parts], axis=0) for i in range(3))


def array_steps(arrays, steps, batch_size, name="steps"):
    """The first ``steps`` batches of arrays (views), as Keras's ``steps`` on arrays."""
    if steps is None:
        return arrays
    k = _int_arg(steps, name) * batch_size
    return tuple(None if a is None else a[:k] for a in arrays)


__all__ = ["adapter", "is_source", "EpochIterator", "Batches", "open_source", "predict", "mc_moments",
           "PyDatasetAdapter", "GeneratorAdapter", "TorchDataLoaderAdapter"]

"""Small helpers users of Keras expect."""
import numpy as np


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer labels (n,) into (n, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of integer labels, got shape {y.shape}")
    if y.size and (y.dtype.kind not in "iu" and not np.all(y == np.round(y))):
        raise ValueError("y must hold integer labels")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError("y must hold non-negative labels")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= num_classes:
        raise ValueError(f"labels must be < num_classes={num_classes}")
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out


class PyDataset:
    """Base class of a data set read batch by batch, as ``keras.utils.PyDataset``
    (``keras.utils.Sequence``): ``fit``/``evaluate``/``predict`` take an instance in
    place of arrays and never copy the whole data set.

    Implement ``__len__`` (the number of batches) and ``__getitem__(index)`` (one batch:
    ``(x, y)``, ``(x, y, sample_weight)``, or ``x`` / ``(x,)`` for ``predict``);
    optionally ``on_epoch_begin``/``on_epoch_end`` (called around every epoch), or a
    ``num_batches`` property returning None for an endless data set (``fit`` then needs
    ``steps_per_epoch``).

    workers: how many batches are read at once, ahead of the one training (a pool of
    threads as Keras's ``PyDatasetAdapter``; batches still arrive in order, so results
    do not depend on it).  use_multiprocessing: read them in ``workers`` worker processes
    instead (forked where the platform allows, else spawned: the data set must then
    pickle); a new pool each epoch, so changes ``on_epoch_end`` makes are seen.
    max_queue_size: at most this many batches read ahead.  Like Keras, these are the
    data set's constructor arguments, not ``fit``'s::

        class Batches(fastdrop.utils.PyDataset):
            def __init__(self, x, y, batch_size, **kwargs):
                super().__init__(**kwargs)        # workers=4, use_multiprocessing=...
                self.x, self.y, self.batch_size = x, y, batch_size
            def __len__(self):
                return -(-len(self.x) // self.batch_size)
            def __getitem__(self, i):
                s = slice(i * self.batch_size, (i + 1) * self.batch_size)
                return self.x[s], self.y[s]

    Any object with ``__len__`` and ``__getitem__`` that is not array-like is read the
    same way (a ``keras.utils.PyDataset`` too).
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self.workers = workers
        self.use_multiprocessing = use_multiprocessing
        self.max_queue_size = max_queue_size

    @property
    def num_batches(self):
        """The number of batches (``len(self)``), or None for an endless data set."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError("implement __len__ (or a num_batches property returning "
                                  "None for an endless data set)")

    def __getitem__(self, index):
        raise NotImplementedError

    def __iter__(self):
        n = self.num_batches
        for i in (range(n) if n is not None else __import__("itertools").count()):
            yield self[i]

    def on_epoch_begin(self):
        """Called at the beginning of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""

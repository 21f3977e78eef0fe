"""Data-parallel training over MPI (``pip install fastdrop-engine[mpi]``).

Spelled as Keras 3's ``keras.distribution``::

    import fastdrop.distributed as dist
    dist.initialize()                       # rank, size, local rank; threads per rank
    dp = dist.DataParallel()                # compression=None | "fp16" | "bf16"
    with dp.scope():                        # or dist.set_distribution(dp)
        model = build_model()
        model.compile(...)
        model.fit(x, y, batch_size=256, epochs=5)   # 256 = the global batch

and launched with ``mpiexec -n 4 python train.py`` (``python -m fastdrop train --ranks 4``
runs the default job that way).

Semantics (equal to one process up to the summation order of the gradients):

* ``batch_size`` is the global batch.  Every rank holds the same arrays and computes a
  contiguous share of every global batch (split as evenly as possible: 10 rows on 4 ranks
  are 3, 3, 2, 2).  Shuffling is a function of the seed and the step, the same on every
  rank; the model seed, weights and optimizer state of rank 0 are broadcast when ``fit``
  starts, after a check that every rank has the same model, data size and batch size.
* Dropout masks are keyed by the row's position in the global batch and the step, exactly
  as one process keys them: the forward pass of every sample is the one a single process
  computes.
* Gradients are summed over the ranks in a fixed order (our own reduce-scatter and
  allgather, sums in rank order: see ``_comm``), so the weights are bitwise identical on
  every rank and from run to run for a fixed number of ranks; every rank applies the same
  optimizer step.  ``compression="fp16"|"bf16"`` sends the gradients at 16 bits.
* Loss and metrics are sums over the ranks divided by the global counts (the weighted mean
  of the ranks' values): History and the callbacks see the same numbers on every rank, so
  EarlyStopping stops all ranks together.  Validation and ``evaluate`` shard the data over
  the ranks; ``predict`` (plain and MC dropout) shards the samples and gathers the outputs.
* BatchNorm normalises with the batch statistics of each rank's share
  (``batchnorm="local"``, as Horovod without SyncBatchNorm); the moving statistics are
  averaged over the ranks after every step (weighted by rows), so they are identical on
  every rank (the moving mean is that of the global batch).  Batch statistics over the
  global batch (``batchnorm="global"``) raise NotImplementedError.
* Only rank 0 writes files: ``save``/``save_weights``/``export`` (and so ModelCheckpoint)
  write on rank 0 and every rank returns when the file is complete; CSVLogger and the
  progress bar run on rank 0 only.  ``load_model`` reads on rank 0 and broadcasts.
* A rank that raises an uncaught exception aborts the whole job (``MPI_Abort``); a rank
  that stops answering makes the others abort after ``timeout`` seconds (default 600,
  ``FASTDROP_MPI_TIMEOUT``).  ``debug=True`` (or ``FASTDROP_DISTRIBUTED_DEBUG=1``)
  compares a checksum of the weights across ranks after every epoch.
"""
import contextlib
import os

from ..models import _distribution as _state
from ._comm import COMPRESSIONS, INSTALL_HINT  # noqa: F401
from ._driver import Driver

__all__ = ["initialize", "rank", "size", "local_rank", "DataParallel", "set_distribution",
           "distribution", "load_model", "is_initialized"]

_info = None


class _Info(tuple):
    """(rank, size, local_rank) with names, plus local_size and threads."""
    __slots__ = ()

    def __new__(cls, rank, size, local_rank, local_size, threads):
        return super().__new__(cls, (rank, size, local_rank, local_size, threads))

    rank = property(lambda s: s[0])
    size = property(lambda s: s[1])
    local_rank = property(lambda s: s[2])
    local_size = property(lambda s: s[3])
    threads = property(lambda s: s[4])

    def __repr__(self):
        return (f"DistributedInfo(rank={self[0]}, size={self[1]}, local_rank={self[2]}, "
                f"local_size={self[3]}, threads={self[4]})")


def _threads_for(local_size, num_threads):
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) \
                or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int or None, got "
                             f"{num_threads!r}")
        return num_threads
    env = os.environ.get("FASTDROP_THREADS_PER_RANK")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"FASTDROP_THREADS_PER_RANK must be a positive integer, got "
                             f"{env!r}")
        return n
    try:
        mine = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        mine = os.cpu_count() or 1
    total = os.cpu_count() or mine
    if mine < total:
        # the launcher bound this rank to some cores (mpiexec -bind-to ...): use them all
        return max(1, mine)
    # every rank of the node may use every core: share them
    return max(1, mine // max(1, local_size))


def initialize(num_threads=None):
    """Start (or join) the MPI job; returns ``(rank, size, local_rank)`` (with
    ``.local_size`` and ``.threads``).  Kernel threads per rank: ``num_threads``, else
    ``$FASTDROP_THREADS_PER_RANK``, else the cores this rank may use (its CPU affinity
    when the launcher bound it, else the node's cores divided by the ranks on the node).
    Installs an exception hook that aborts the job when a rank fails.  Calling it again
    returns the same numbers (and re-sets the threads when num_threads is given)."""
    global _info
    from . import _comm
    from .. import runtime
    comm = _comm.world()
    MPI = _comm.mpi()
    if _info is None or num_threads is not None:
        local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
        threads = _threads_for(local_size, num_threads)
        runtime.set_num_threads(threads)
        _info = _Info(comm.Get_rank(), comm.Get_size(), local_rank, local_size, threads)
        _comm.install_excepthook(comm)
    return _info


def is_initialized():
    return _info is not None


def rank():
    """This process's rank in the MPI job (imports mpi4py, which initialises MPI)."""
    from . import _comm
    return _comm.world().Get_rank()


def size():
    """Number of ranks in the job."""
    from . import _comm
    return _comm.world().Get_size()


def local_rank():
    return initialize().local_rank


class DataParallel(Driver):
    """Data-parallel training across the ranks of the MPI job (see the module doc).

    compression: None (float32 gradients), "fp16" or "bf16" (16-bit gradients on the wire;
    weights still identical on every rank, but no longer equal to one process beyond the
    16-bit rounding).  batchnorm: "local" (each rank's share; the only one implemented).
    debug: compare a checksum of the weights across ranks after every epoch (default
    ``$FASTDROP_DISTRIBUTED_DEBUG``).  timeout: seconds a rank waits for the others before
    aborting the job (default ``$FASTDROP_MPI_TIMEOUT`` or 600).  overlap: reduce each
    stage's gradients with a non-blocking MPI ``Iallreduce`` as soon as backward has
    produced them, tested between stages (as PyTorch DDP and Horovod do).  Its sums are
    MPI's: with 2 ranks the same bits as the ordered reduction; with more, reproducible
    only as far as the MPI library's reduction order is (``debug=True`` checks that the
    ranks agree).  Off by default; on the 2-core test machine it shortened the 2-rank
    step in every bench run (MPI's Allreduce is also faster than the ordered reduction's
    NumPy sums), see ``python -m fastdrop bench --distributed``.
    """

    def __init__(self, compression=None, batchnorm="local", debug=None, timeout=None,
                 overlap=False):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be None, 'fp16' or 'bf16', got "
                             f"{compression!r}")
        if batchnorm in ("global", "sync"):
            raise NotImplementedError(
                f"DataParallel(batchnorm={batchnorm!r}): BatchNorm statistics over the "
                f"global batch (SyncBatchNorm) are not implemented; batchnorm='local' "
                f"normalises each rank's share of the batch")
        if batchnorm != "local":
            raise ValueError(f"batchnorm must be 'local' (or 'global', not implemented), "
                             f"got {batchnorm!r}")
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be True or False, got {overlap!r}")
        if overlap and compression is not None:
            raise ValueError("overlap=True reduces float32 gradients with MPI's Iallreduce; "
                             "compression is not available with it")
        from . import _comm
        if timeout is None:
            timeout = _comm.timeout_from_env()
        elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if debug is None:
            debug = os.environ.get("FASTDROP_DISTRIBUTED_DEBUG", "") not in ("", "0")
        initialize()
        super().__init__(_comm.world(), compression, bool(debug), float(timeout), overlap)
        self.batchnorm = batchnorm

    @contextlib.contextmanager
    def scope(self):
        """``with dp.scope():`` — fit, evaluate, predict and save inside are data-parallel."""
        _state._scoped.append(self)
        try:
            yield self
        finally:
            _state._scoped.pop()

    def __repr__(self):
        return (f"DataParallel(ranks={self.size}, compression={self.compression!r}, "
                f"batchnorm={self.batchnorm!r})")


def set_distribution(dp):
    """Make ``dp`` (a DataParallel, or None for one process) the distribution of every
    fit / evaluate / predict / save outside a ``scope()``."""
    if dp is not None and not isinstance(dp, DataParallel):
        raise TypeError(f"set_distribution expects a DataParallel or None, got "
                        f"{type(dp).__name__}")
    _state._current = dp


def distribution():
    """The distribution in force (a DataParallel) or None."""
    return _state.active()


def load_model(filepath):
    """``fastdrop.models.load_model`` read on rank 0 and broadcast to every rank (one
    reader of the file system; the same model everywhere).  An error on rank 0 is raised
    on every rank."""
    from . import _comm
    from ..io.native import model_from_bytes, model_to_bytes
    from ..models.sequential import load_model as _load
    comm = _comm.world()
    if comm.Get_size() == 1:
        return _load(filepath)
    payload = err = exc = None
    model = None
    if comm.Get_rank() == 0:
        try:
            model = _load(filepath)
            payload = model_to_bytes(model)
        except Exception as e:    # noqa: BLE001 — raised on every rank
            exc, err = e, (type(e).__name__, str(e))
    err = comm.bcast(err, root=0)
    if err is not None:
        if exc is not None:
            raise exc
        raise _reraise(err, "rank 0 could not load the model: ")
    payload = comm.bcast(payload, root=0)
    return model if model is not None else model_from_bytes(payload)


def _reraise(err, prefix=""):
    name, msg = err
    cls = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
           "OSError": OSError, "PermissionError": PermissionError,
           "TypeError": TypeError}.get(name, RuntimeError)
    return cls(prefix + msg)

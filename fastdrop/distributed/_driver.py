"""The data-parallel side of the one fit loop: the hooks ``fastdrop.models.trainer`` calls
when a DataParallel is in force (``begin_fit``, ``share``, ``train_step``,
``mask_counts``, ``combine_sums``), the sharded ``predict`` and the rank-0 writes."""
import json
import os
import time
import zlib

import numpy as np

from .. import callbacks as _callbacks
from . import _comm


class _ReducedMetric:
    """A metric function whose value for the step's logits is the one summed over the
    ranks by ``Driver.train_step`` (the trainer's metric loop is unchanged); any other
    call (validation inside fit) computes locally."""

    def __init__(self, driver, k, fn):
        self.driver, self.k, self.fn = driver, k, fn

    def __call__(self, z, y, w):
        d = self.driver
        if z is d._step_z:
            return d._step_metrics[self.k]
        return self.fn(z, y, w)


class _WeightChecksum(_callbacks.Callback):
    """debug=True: after every epoch, every rank's weights must have the same checksum."""

    def __init__(self, driver):
        super().__init__()
        self.driver = driver

    def on_epoch_end(self, epoch, logs=None):
        self.driver.check_weights(self.model, f"after epoch {epoch + 1}")


def _is_rank0_writer(cb):
    """Callbacks that write files or the terminal and run on rank 0 only."""
    return isinstance(cb, _callbacks.CSVLogger) or getattr(cb, "rank0_only", False)


class Driver:
    def __init__(self, comm, compression, debug, timeout, overlap=False):
        self.comm = comm
        self.overlap = overlap
        self._buckets = None
        self._state_reducer = None
        self._defer = False   # bench only: overlap's Iallreduce started after backward
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.compression = compression
        self.debug = debug
        self.timeout = timeout
        self._reducer = None
        self._step_z = None
        self._step_metrics = ()
        self._raw_metrics = ()
        self.reset_timers()

    # ----------------------------------------------------------------- timers
    def reset_timers(self):
        """Seconds spent, since the last reset, in local compute (forward, backward,
        metrics) and in the gradient and loss communication."""
        self.compute_seconds = 0.0
        self.comm_seconds = 0.0
        self.steps = 0
        if self._reducer is not None:
            self._reducer.comm_seconds = self._reducer.sum_seconds = 0.0

    # ------------------------------------------------------------- agreement
    def _allgather(self, obj):
        return self.comm.allgather(obj)

    def _agree(self, what, items):
        """Every rank must give the same value for each (name, value) in items."""
        all_items = self._allgather(items)
        bad = []
        for k, (name, _) in enumerate(items):
            vals = [it[k][1] for it in all_items]
            if any(v != vals[0] for v in vals[1:]):
                shown = ", ".join(f"rank {r}: {v!r:.60}" for r, v in enumerate(vals))
                bad.append(f"{name} ({shown})")
        if bad:
            raise ValueError(f"fastdrop.distributed: the ranks disagree on {what}: "
                             + "; ".join(bad) + " — every rank must build the same model "
                             "and pass the same data and arguments")

    def _bcast_array(self, a):
        if self.size > 1 and a.size:
            self.comm.Bcast(a, root=0)

    def _sync_from_rank0(self, model):
        """Seed, step counter, weights, state and optimizer state of rank 0 on every rank
        (the model seed may have been drawn at random on each rank)."""
        model.seed, model._step = self.comm.bcast((model.seed, model._step), root=0)
        store = model._store
        self._bcast_array(store.params)
        self._bcast_array(store.state)
        opt = model.optimizer
        st = np.ascontiguousarray(opt.state(), np.float32).copy()
        self._bcast_array(st)
        its = self.comm.bcast(opt.iterations, root=0)
        opt.set_state(st, its)

    def checksum(self, model):
        store = model._store
        return (zlib.crc32(store.params.tobytes()), zlib.crc32(store.state.tobytes()))

    def check_weights(self, model, when):
        sums = self._allgather(self.checksum(model))
        if any(s != sums[0] for s in sums[1:]):
            raise RuntimeError(f"fastdrop.distributed: the weights differ across ranks "
                               f"{when} (checksums {sums}); this is a bug — please report it")

    # ------------------------------------------------------------ fit hooks
    def begin_fit(self, model, n, bs, steps, metric_fns, cbs, verbose):
        """Called by fit once its inputs are checked: agree, broadcast rank 0's model,
        wrap the metrics so their values are the global ones, keep the rank-0 writers on
        rank 0."""
        cfg = json.dumps(model.get_config(), sort_keys=True, default=str)
        self._agree("the model and the data", [
            ("training samples", n), ("batch_size", bs), ("steps per epoch", steps),
            ("per-sample input shape", tuple(model._bound or ())),
            ("model config (crc32)", zlib.crc32(cfg.encode())),
            ("trainable parameters", int(model._store.params.size)),
            ("state variables", int(model._store.state.size)),
            ("loss", getattr(model.loss, "name", type(model.loss).__name__)),
            ("optimizer", type(model.optimizer).__name__),
            ("metrics", tuple(model.metrics)),
        ])
        self._sync_from_rank0(model)
        size = int(model._store.grads.size)
        if self._reducer is None or self._reducer.n != size:
            self._reducer = _comm.GradientReducer(self.comm, size, self.compression,
                                                  self.timeout)
        self._raw_metrics = tuple((f, weighted) for _, f, weighted in metric_fns)
        wrapped = [(name, _ReducedMetric(self, k, f), weighted)
                   for k, (name, f, weighted) in enumerate(metric_fns)]
        if self.rank != 0:
            cbs = [cb for cb in cbs if not _is_rank0_writer(cb)]
            verbose = 0
        if self.debug:
            check = _WeightChecksum(self)
            check.set_model(model)
            cbs = cbs[:-1] + [check] + cbs[-1:]       # History stays last
            self.check_weights(model, "at the start of fit")
        return wrapped, cbs, verbose

    def share(self, lo, hi):
        """(offset in the global batch, lo, hi) of this rank's contiguous share of the
        global batch [lo, hi)."""
        counts, starts = _comm.split_counts(hi - lo, self.size)
        s = int(starts[self.rank])
        return s, lo + s, lo + s + int(counts[self.rank])

    def mask_counts(self, model):
        """None for a model without a mask path (``_plain``: the same on every rank), else
        fn(valid, total) -> the output mask's (valid, total) summed over the ranks: the
        loss's total/valid scale (Keras ``apply_mask``) is the one of the whole global
        batch, as in one process.  Every rank calls it exactly once per batch."""
        if getattr(model, "_plain", True):
            return None

        def counts(valid, total):
            t = _comm.allsum_f64(self.comm, np.array([valid, total], np.float64),
                                 self.timeout, "the mask count")
            return int(round(t[0])), int(round(t[1]))
        return counts

    def _run_local(self, model, xb, yb, wb, mr, offset, part):
        """This rank's forward/backward and its loss and metric sums into ``part``;
        returns (loss rows, target rows, metric row weights)."""
        counts = self.mask_counts(model)
        if mr > 0:
            loss_sum, z, yr, wm = model._train_step(xb, yb, wb, mr, offset, counts)
            part[0] = loss_sum
            for k, (f, weighted) in enumerate(self._raw_metrics):
                s_, c_ = f(z, yr, wm[weighted])
                part[1 + 2 * k], part[2 + 2 * k] = s_, c_
            return z, yr, wm
        # a global batch smaller than the number of ranks: nothing here
        model._store.grads[...] = 0.0
        if counts is not None:
            counts(0, 0)
        C = model._rows[1]
        z = np.empty((0, C), np.float32)
        yr = np.empty((0,) if model.loss.sparse else (0, C), yb.dtype)
        return z, yr, (None, None)

    def train_step(self, model, xb, yb, wb, mr, offset, m):
        """This rank's forward/backward on its ``mr`` rows (rows ``offset..`` of a global
        batch of ``m``), then the gradients and the loss/metric sums combined over the
        ranks.  Returns (global weighted loss sum, this rank's loss rows, target rows and
        metric row weights)."""
        if self.overlap and self.size > 1:
            return self._train_step_overlap(model, xb, yb, wb, mr, offset, m)
        t0 = time.perf_counter()
        nm = len(self._raw_metrics)
        part = np.zeros(1 + 2 * nm, np.float64)
        rows = self._run_local(model, xb, yb, wb, mr, offset, part)
        t1 = time.perf_counter()
        counts, _ = _comm.split_counts(m, self.size)
        weights = counts / float(m)        # this rank's gradient is a mean over its rows
        red = self._reducer
        red.reduce(model._store.grads, weights)
        self._reduce_state(model, weights)
        tot = _comm.allsum_f64(self.comm, part, self.timeout, "the loss reduction")
        t2 = time.perf_counter()
        self.compute_seconds += t1 - t0
        self.comm_seconds += t2 - t1        # MPI, waits and the local sums of the ranks
        self.steps += 1
        return self._finish_step(tot, rows)

    def _reduce_state(self, model, weights):
        """Moving statistics (BatchNorm) averaged over the ranks after every step, weighted
        as the gradients: each rank normalises its share with its own batch statistics,
        and the moving mean becomes the one of the global batch (the moving variance the
        mean of the ranks' variances), the same bits on every rank."""
        st = model._store.state
        if st.size == 0:
            return
        if self._state_reducer is None or self._state_reducer.n != st.size:
            self._state_reducer = _comm.GradientReducer(self.comm, st.size, None,
                                                        self.timeout)
        self._state_reducer.reduce(st, weights)

    def _finish_step(self, tot, rows):
        nm = len(self._raw_metrics)
        self._step_z = rows[0]
        self._step_metrics = [(float(tot[1 + 2 * k]), float(tot[2 + 2 * k]))
                              for k in range(nm)]
        return (float(tot[0]),) + tuple(rows)

    # ------------------------------------------------ overlapped reduction
    def _stage_buckets(self, model):
        """Per stage: [lo, hi) of its gradients in the flat block (None: no weights), and
        whether a regularizer adds to them after backward (then reduced at the end)."""
        store = model._store
        reg = {id(v) for v in model._reg_vars}
        out = []
        for st in model._stages:
            vs = [v for layer in st.layers for v in layer.variables
                  if id(v) in store.ranges]
            if not vs:
                out.append(None)
                continue
            r = [store.ranges[id(v)] for v in vs]
            out.append((min(a for a, _ in r), max(b for _, b in r),
                        any(id(v) in reg for v in vs)))
        return out

    def _train_step_overlap(self, model, xb, yb, wb, mr, offset, m):
        """overlap=True: each stage's gradients go into a non-blocking MPI Iallreduce as
        soon as its backward has produced them (pre-scaled by this rank's weight); the
        requests are tested between stages so MPI can progress, and waited for at the end.
        With 2 ranks the sum of two terms is the same bits as the ordered reduction."""
        MPI = _comm.mpi()
        t0 = time.perf_counter()
        store = model._store
        grads = store.grads
        key = (id(model._stages), grads.size, len(model._reg_vars))
        if self._buckets is None or self._buckets[0] != key:
            self._buckets = (key, self._stage_buckets(model))
        buckets = self._buckets[1]
        counts, _ = _comm.split_counts(m, self.size)
        w = np.float32(counts[self.rank] / float(m))
        reqs, started = [], set()
        comm = self.comm

        def start(i):
            lo, hi, _ = buckets[i]
            g = grads[lo:hi]
            g *= w
            reqs.append(comm.Iallreduce(MPI.IN_PLACE, [g, MPI.FLOAT], MPI.SUM))
            started.add(i)

        def backward(ctx, d):
            stages = model._stages
            f = model._first_trainable
            for i in range(len(stages) - 1, f - 1, -1):
                d = stages[i].backward(ctx, d, i > f)
                if buckets[i] is not None and not buckets[i][2] and not self._defer:
                    start(i)
                if reqs:
                    MPI.Request.Testall(reqs)      # let MPI progress between stages

        nm = len(self._raw_metrics)
        part = np.zeros(1 + 2 * nm, np.float64)
        model._backward = backward                 # this step only (instance attribute)
        try:
            rows = self._run_local(model, xb, yb, wb, mr, offset, part)
        finally:
            del model._backward
        for i in range(len(buckets) - 1, -1, -1):  # regularised or frozen stages, or none
            if buckets[i] is not None and i not in started:
                start(i)
        t1 = time.perf_counter()
        _comm.wait(comm, reqs, self.timeout, "the overlapped gradient allreduce")
        self._reduce_state(model, counts / float(m))
        tot = _comm.allsum_f64(comm, part, self.timeout, "the loss reduction")
        t2 = time.perf_counter()
        self.compute_seconds += t1 - t0
        self.comm_seconds += t2 - t1
        self.steps += 1
        return self._finish_step(tot, rows)

    # --------------------------------------------------------- evaluate hooks
    def shard(self, n):
        counts, starts = _comm.split_counts(n, self.size)
        s = int(starts[self.rank])
        return s, s + int(counts[self.rank])

    def combine_sums(self, total, sums, counts):
        """evaluate's loss total and metric (sum, count) pairs summed over the ranks."""
        nm = len(sums)
        part = np.zeros(1 + 2 * nm, np.float64)
        part[0] = total
        part[1::2], part[2::2] = sums, counts
        tot = _comm.allsum_f64(self.comm, part, self.timeout, "evaluate")
        return float(tot[0]), [float(v) for v in tot[1::2]], [float(v) for v in tot[2::2]]

    # ---------------------------------------------------------------- predict
    def predict(self, model, x, batch_size, mc_samples, seed):
        """Each rank predicts its contiguous shard of the samples; the outputs are
        gathered on every rank.  MC dropout keys each sample by its index in the whole
        call, so the result equals one process's."""
        from ..models.mc import _mc_moments
        x, _ = model._prepare_predict(x, batch_size)
        n = x.shape[0]
        if mc_samples is not None and seed is None:
            seed = self.common_seed()
        lo, hi = self.shard(n)
        if mc_samples is not None:
            mean, m2, _ = _mc_moments(model, x[lo:hi], mc_samples, seed, batch_size,
                                      offset=lo)
            parts = (mean, np.sqrt(m2))
        else:
            parts = (model._predict(x[lo:hi], batch_size),)
        outs = tuple(self._gather_rows(p, n) for p in parts)
        return outs if mc_samples is not None else outs[0]

    def common_seed(self):
        """A fresh random seed, rank 0's on every rank (MC predict without a seed)."""
        return self.comm.bcast(int.from_bytes(os.urandom(8), "little"), root=0)

    def _gather_rows(self, part, n):
        per = int(np.prod(part.shape[1:], dtype=np.int64))
        out = np.empty((n,) + part.shape[1:], np.float32)
        if self.size == 1:
            out[...] = part
            return out
        counts, starts = _comm.split_counts(n, self.size)
        MPI = _comm.mpi()
        req = self.comm.Iallgatherv([np.ascontiguousarray(part, np.float32), MPI.FLOAT],
                                    [out, (counts * per, starts * per), MPI.FLOAT])
        _comm.wait(self.comm, [req], self.timeout, "predict")
        return out

    # ----------------------------------------------------------------- writes
    def rank0_write(self, fn, what="save"):
        """Run ``fn`` (a file write) on rank 0 only; every rank returns once it is done,
        and an error on rank 0 is raised on every rank."""
        if self.size == 1:
            return fn()
        exc = err = res = None
        if self.rank == 0:
            try:
                res = fn()
            except Exception as e:   # noqa: BLE001 — raised on every rank
                exc, err = e, f"{type(e).__name__}: {e}"
        err = self.comm.bcast(err, root=0)
        if exc is not None:
            raise exc
        if err is not None:
            raise OSError(f"fastdrop.distributed: rank 0 failed to {what}: {err}")
        return res

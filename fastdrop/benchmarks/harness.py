"""Timing and thread control shared by ``python -m fastdrop bench`` and the
pytest-benchmark suites under ``bench/``: ``measure`` (interleaved blocks of short
samples), ``Case`` (a callable with a per-block setup), ``Context`` (the run's plan,
random generator, log and every side's thread count) and machine helpers.

Nothing here imports a peer library at module level (torch through ``peers.torch``)."""
import gc
import os
import platform
import time

import numpy as np

MB = 1 << 20


class Case:
    """One timed callable; ``setup`` runs before each block of samples (thread counts)."""

    def __init__(self, fn, setup=None):
        self.fn = fn
        self.setup = setup


def _run(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def measure(cases, budget=0.5, sample_s=0.001, min_samples=3, max_samples=2000, slow_s=0.25,
            block=3, min_slow=2):
    """Time several callables interleaved in blocks (A A A, B B B, C C C, A A A, ...) so
    that drifting machine load hits them alike, while each block gives the other side's
    idle threads (OpenBLAS spins ~0.1 s after a call) time to park.  Samples are short
    (``sample_s``) and many: the best of them is what the code does when the machine
    leaves it alone (with other processes on the cores, a parallel region waits for a
    scheduler tick whenever one of its threads is preempted: only short samples see the
    quiet windows between).  Calls slower than ``slow_s`` need only ``min_slow`` samples
    (the warm-up call counts).  ``cases``: {name: Case or callable or None (skipped)}.
    Returns {name: {"best": s, "median": s, "samples": k}} in seconds per call."""
    cases = {k: (c if isinstance(c, Case) else Case(c)) for k, c in cases.items()
             if c is not None}
    inner, est, samples = {}, {}, {k: [] for k in cases}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k, c in cases.items():          # warm up, calibrate calls per sample
            if c.setup:
                c.setup()
            t = _run(c.fn, 1)
            if t >= slow_s:                 # slow baseline: this call is a sample
                samples[k].append(t)
                inner[k], est[k] = 1, t
                continue
            t = _run(c.fn, 1)
            n = 1
            if t >= 0.5 * sample_s:         # a steady-state call long enough: a sample
                samples[k].append(t)
            while t < 0.5 * sample_s and n < (1 << 22):
                n = min(n * 16, max(n + 1, int(n * sample_s / max(t, 1e-7))))
                t = _run(c.fn, n)
            inner[k], est[k] = n, t / n
        # blocks of short samples; long calls (> 30 ms a sample) one at a time
        nblock = {k: block if est[k] * inner[k] < 0.03 else 1 for k in cases}
        t_start = time.perf_counter()
        while True:
            spent = time.perf_counter() - t_start
            todo = [k for k in cases if len(samples[k]) < max_samples and
                    (spent < budget or len(samples[k]) <
                     (min_slow if est[k] >= slow_s else min_samples))]
            if not todo:
                break
            for k in todo:
                c = cases[k]
                if c.setup:
                    c.setup()
                for _ in range(nblock[k]):
                    samples[k].append(_run(c.fn, inner[k]) / inner[k])
    finally:
        if was_enabled:
            gc.enable()
    return {k: {"best": min(v), "median": float(np.median(v)), "samples": len(v)}
            for k, v in samples.items()}


# ------------------------------------------------------------------------ helpers


def cpu_count():
    """Cores this process may run on ("all threads" everywhere in the benchmarks)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Blas:
    """NumPy's BLAS thread count through threadpoolctl (when installed)."""

    def __init__(self):
        try:
            import threadpoolctl
            self.ctl = threadpoolctl.ThreadpoolController()
            self.info = [i for i in self.ctl.info() if i.get("user_api") == "blas"]
        except Exception:           # not installed or cannot inspect
            self.ctl, self.info = None, []

    @property
    def available(self):
        return self.ctl is not None and bool(self.info)

    def set(self, n):
        if self.available:
            self.ctl.limit(limits=n, user_api="blas")

    def restore(self):
        """Back to the thread counts found at construction."""
        if self.available:
            for i in self.info:
                self.ctl.limit(limits=i["num_threads"], user_api="blas")

    def describe(self):
        if not self.available:
            return "BLAS threads not controlled (pip install threadpoolctl)"
        i = self.info[0]
        return (f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernel, "
                f"{i.get('threading_layer')})")


def elem_label(n):
    """('1M', '4 MB') for n float32 elements."""
    b = 4 * n
    size = f"{b // MB} MB" if b >= MB else f"{b // 1024} KB"
    return f"{n // MB}M" if n >= MB else f"{n // 1024}K", size


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def quantiles(ts):
    """(median, p99) of a list of times."""
    ts = np.sort(np.asarray(ts, np.float64))
    return float(np.median(ts)), float(ts[min(len(ts) - 1, int(np.ceil(0.99 * len(ts))) - 1)])


def model_name(sizes):
    return "-".join(map(str, sizes))


class Context:
    """What a family's ``bench(ctx)`` gets: the plan ``cfg``, all-threads count ``n``,
    NumPy's BLAS control, a ``log`` function, one random generator, and thread setters
    for every side (fastdrop, NumPy's BLAS, torch once imported)."""

    def __init__(self, cfg, log=None):
        from .. import runtime as fastdrop_runtime
        self.fastdrop = fastdrop_runtime
        self.cfg = cfg
        self.n = cfg["threads"]
        self.blas = Blas()
        self.log = log or (lambda s: None)
        self.rng = np.random.default_rng(0)

    def torch(self):
        """torch if the plan wants it and it imports, else None."""
        from . import peers
        return peers.torch(self.cfg)

    def threads(self, n):
        """Set every side's thread count to n."""
        from . import peers
        self.fastdrop.set_num_threads(n)
        self.blas.set(n)
        torch = peers.torch_if_imported()
        if torch is not None:
            torch.set_num_threads(n)

    def fd_threads(self, n):
        return lambda: self.fastdrop.set_num_threads(n)

    def blas_threads(self, n):
        return lambda: self.blas.set(n)

    def measure(self, cases, scale=1.0):
        c = self.cfg
        return measure(cases, budget=c["budget"] * scale, sample_s=c["sample_s"],
                       min_samples=c["min_samples"], min_slow=c.get("min_slow", 2))

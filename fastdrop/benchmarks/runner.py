"""``python -m fastdrop bench`` (``main``): a quick report of fastdrop's kernels and training step
beside their baselines, measured in one process, on the same inputs, with explicit
thread counts on both sides.

Every figure is the best of several interleaved samples (the median is kept in the JSON
file); the ratios compare figures measured moments apart in this run, which is what
matters on a shared, noisy machine (absolute figures drift).

* fastdrop kernels are timed through ``fastdrop._core`` with preallocated outputs, exactly
  as the training engine calls them; baselines through their usual API
  (``numpy.matmul(..., out=)``, ``fastdrop.reference``, ``np.copyto`` as memcpy,
  ``torch.nn.functional.dropout`` when torch is importable — never a dependency).
* Training throughput is the public ``Sequential.fit`` in steady state (buffers built by
  a warm-up call; each timed call runs ``steps`` steps of batch 128 on the same data the
  NumPy ``ReferenceTrainer`` and PyTorch see).
* NumPy's BLAS: ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` pin OpenBLAS to a kernel that
  may not be its best; when set, the whole report is re-executed in a subprocess without
  them (fastdrop ignores them), and the header says so.
* "Beside NumPy": a GEMM and a one-sample predict alone and right after a NumPy matmul
  (median and p99); "steady state": samples/s per epoch of a model trained for several
  epochs on Fashion-MNIST (the full set if found locally, else the embedded subset).
* bf16 mixed precision (``cases/bf16.py``): ``_core.gemm_bf16`` on every bf16 path this CPU
  runs beside the fp32 SGEMM, the MLP trained under ``'mixed_bfloat16'`` beside
  ``'float32'`` and PyTorch fp32 / ``torch.autocast`` bf16, MC dropout bf16 beside fp32.
* One progress line per case goes to stderr while it measures (FASTDROP_BENCH_QUIET=1
  silences them); PNG plots are written only when --plots is given.  Targets are ratios.

``main(args)`` takes the ``bench`` sub-command's arguments (json, plots, threads, quick).
``run(config)`` returns the figures as a dict (each section from one family's ``bench`` in
``cases/``); ``report.format_report`` renders the table.
"""
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import peers, report
from .cases import activations, bf16, cnn, dropout, gemm, losses, mlp, optim, rnn
from .harness import Blas, Context, cpu_count, cpu_model
from .targets import targets

_OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_CHILD_ENV = "FASTDROP_BENCH_REEXEC"          # JSON of the removed variables, in the child
RATE = 0.5

# ------------------------------------------------------------------------ configs


def config(quick=False, threads=0, torch=True):
    """The measurement plan.  ``threads``: 0 = all cores."""
    n = int(threads) or cpu_count()
    common = dict(threads=n, torch=torch, quick=quick, rate=RATE, batch=128)
    if quick:
        return dict(common,
                    gemm_square=[512, 1024, 2048],
                    gemm_mlp=True,
                    elem_sizes=[1 << 20, 32 << 20],
                    slow_baseline_max=1 << 20,      # ref/torch dropout only up to 4 MB
                    xent=[(128, 10), (1024, 10), (128, 1000), (1024, 1000)],
                    adam_sizes=[],
                    train_models=[(784, 1024, 1024, 10), (784, 256, 256, 10)],
                    train_threads=sorted({1, n}),
                    train_steps={1024: 6, 256: 12},
                    predict=True,
                    mixed_samples=100, steady=dict(epochs=3, samples=12800),
                    bf16_gemm=dict(batches=[128], sizes=(784, 1024), square=[1024]),
                    bf16_train=dict(sizes=(784, 1024, 1024, 10), batch=128, steps=6),
                    bf16_mc=dict(sizes=(784, 1024, 1024, 10), T=20, batch=64),
                    budget=0.25, sample_s=0.001, min_samples=2, min_slow=1)
    return dict(common,
                gemm_square=[256, 512, 1024, 2048],
                gemm_mlp=True,
                elem_sizes=[1 << 16, 1 << 20, 4 << 20, 32 << 20],
                slow_baseline_max=32 << 20,
                xent=[(128, 10), (1024, 10), (128, 100), (1024, 100), (128, 1000),
                      (1024, 1000)],
                adam_sizes=[269_322, 1_863_690],
                train_models=[(784, 1024, 1024, 10), (784, 256, 256, 10)],
                train_threads=sorted({1, n}),
                train_steps={1024: 16, 256: 32},
                predict=True,
                mixed_samples=300, steady=dict(epochs=5, samples=None),
                bf16_gemm=dict(batches=[128, 256], sizes=(784, 1024), square=[1024]),
                bf16_train=dict(sizes=(784, 1024, 1024, 10), batch=128, steps=16),
                bf16_mc=dict(sizes=(784, 1024, 1024, 10), T=20, batch=128),
                budget=0.8, sample_s=0.001, min_samples=3)


def tiny_config():
    """Seconds-long plan with tiny sizes and no torch (the smoke test's)."""
    return dict(threads=min(2, cpu_count()), torch=False, quick=True, rate=RATE, batch=32,
                gemm_square=[64], gemm_mlp=False, elem_sizes=[1 << 12],
                slow_baseline_max=1 << 12, xent=[(32, 10)], adam_sizes=[1000],
                train_models=[(20, 16, 16, 4)], train_threads=sorted({1, min(2, cpu_count())}),
                train_steps={16: 2}, predict=True,
                mixed_samples=5, steady=dict(epochs=2, samples=256, sizes=(784, 16, 10)),
                bf16_gemm=dict(batches=[4], sizes=(20, 16), square=[16]),
                bf16_train=dict(sizes=(20, 16, 16, 4), batch=4, steps=2),
                bf16_mc=dict(sizes=(20, 16, 16, 4), T=2, batch=4),
                models=False,
                budget=0.005, sample_s=0.001, min_samples=1)



# ------------------------------------------------------------------------ machine


def machine_info(blas=None):
    from .. import runtime as fastdrop_runtime
    info = dict(cpu=cpu_model(), cores=cpu_count(), logical_cpus=os.cpu_count(),
                fastdrop=fastdrop_runtime.cpu_info(), python=platform.python_version(),
                platform=platform.platform(), numpy=np.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    blas = blas or Blas()
    try:
        info["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        info["loadavg"] = None
    info["blas"] = blas.info or None
    info["threadpoolctl"] = blas.available
    info["openblas_env"] = {k: os.environ.get(k) for k in _OPENBLAS_ENV}
    removed = os.environ.get(_CHILD_ENV)
    info["openblas_env_removed"] = json.loads(removed) if removed else None
    torch = peers.torch_if_imported()
    if torch is not None:
        info["torch"] = torch.__version__
    try:
        import matplotlib
        info["matplotlib"] = matplotlib.__version__
    except Exception:
        pass
    try:
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        rev = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            info["git"] = rev.stdout.strip()
    except Exception:
        pass
    return info


# ---------------------------------------------------------------------------- run


def run(cfg, log=None):
    """Measure everything in ``cfg`` (see ``config``); returns the results dict."""
    from .. import runtime as fastdrop_runtime
    log = log or (lambda s: None)
    old_threads = fastdrop_runtime.get_num_threads()
    torch0 = peers.torch_if_imported()
    old_torch = torch0.get_num_threads() if torch0 is not None else None
    t0 = time.perf_counter()
    ctx = Context(cfg, log)
    res = {}
    try:
        load_start = os.getloadavg()[0]
    except (AttributeError, OSError):
        load_start = None
    try:
        res["gemm"] = gemm.bench(ctx)
        res["dropout"] = dropout.bench(ctx)
        res["relu"] = activations.bench(ctx)
        res["softmax_cross_entropy"] = losses.bench(ctx)
        res["adam"] = optim.bench(ctx)
        res["train"], res["thread_scaling"] = mlp.bench_train(ctx)
        res["predict"] = mlp.bench_predict(ctx) if cfg.get("predict") else []
        res["mixed"] = mlp.bench_mixed(ctx)
        res["steady"] = mlp.bench_steady(ctx)
        if any(cfg.get(k) for k in ("bf16_gemm", "bf16_train", "bf16_mc")):
            res["bf16"] = bf16.bench(ctx)
        if cfg.get("models", True):
            res["models"] = cnn.bench(ctx) + rnn.bench(ctx) + cnn.bench_inference(ctx)
    finally:
        fastdrop_runtime.set_num_threads(old_threads)
        ctx.blas.restore()
        torch = peers.torch_if_imported()
        if torch is not None and old_torch:
            torch.set_num_threads(old_torch)
    res["targets"] = targets(res)
    settings = {k: v for k, v in cfg.items()}
    settings["torch"] = peers.torch_if_imported() is not None if cfg.get("torch") else False
    machine = machine_info(ctx.blas)
    machine["loadavg_start"] = load_start
    return dict(schema=1, machine=machine, settings=settings, results=res,
                elapsed_s=time.perf_counter() - t0)


# --------------------------------------------------------------------------- main


_CLI_PLOTS_DEFAULT = "bench-plots"


def _plots_requested(args):
    """The plots directory if plots were asked for: the CLI's --plots option has a default
    directory, so that default counts only when --plots is on the command line."""
    plots = getattr(args, "plots", None)
    if plots == _CLI_PLOTS_DEFAULT and not any(
            a == "--plots" or a.startswith("--plots=") for a in sys.argv[1:]):
        return None
    return plots or None


def _reexec_without_openblas_env(args, environ=None, runner=subprocess.run):
    """Run ``python -m fastdrop bench`` with the same arguments in a child process whose
    environment lacks OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE; returns its exit code."""
    env = dict(os.environ if environ is None else environ)
    removed = {k: env.pop(k) for k in _OPENBLAS_ENV if k in env}
    env[_CHILD_ENV] = json.dumps(removed)
    argv = [sys.executable, "-m", "fastdrop", "bench"]
    if getattr(args, "json", None):
        argv += ["--json", args.json]
    if _plots_requested(args):
        argv += ["--plots", args.plots]
    if getattr(args, "threads", 0):
        argv += ["--threads", str(args.threads)]
    if getattr(args, "quick", False):
        argv.append("--quick")
    print("fastdrop bench: " + ", ".join(f"{k}={v}" for k, v in removed.items()) +
          " set: re-running without them so NumPy's BLAS runs its best kernel",
          file=sys.stderr, flush=True)
    return runner(argv, env=env).returncode


def main(args, cfg=None):
    """Entry point of ``python -m fastdrop bench`` (args: json, plots, threads, quick).
    ``cfg`` overrides the measurement plan (tests pass ``tiny_config()``)."""
    if cfg is None and not os.environ.get(_CHILD_ENV) and \
            any(k in os.environ for k in _OPENBLAS_ENV):
        return _reexec_without_openblas_env(args)
    if cfg is None:
        cfg = config(quick=bool(getattr(args, "quick", False)),
                     threads=getattr(args, "threads", 0) or 0)
    t_start = time.perf_counter()
    quiet = os.environ.get("FASTDROP_BENCH_QUIET", "") not in ("", "0")
    log = None if quiet else (lambda s: print(f"  {time.perf_counter() - t_start:6.1f}s  {s}",
                                              file=sys.stderr, flush=True))
    print(f"fastdrop bench: measuring ({'quick' if cfg.get('quick') else 'full'}, "
          f"{cfg['threads']} threads)...", file=sys.stderr, flush=True)
    data = run(cfg, log)
    print(report.format_report(data))
    path = getattr(args, "json", None)
    if path:
        report.write_json(data, path)
        print(f"figures saved to {path}")
    plots = _plots_requested(args)
    if plots:
        paths = report.write_plots(data, plots)
        if paths:
            print(f"{len(paths)} plots written to {plots}/")
    return 0

"""pytest-benchmark suites of fastdrop (not tests: ``pytest tests`` never looks here).

    pytest bench/ --benchmark-only --benchmark-group-by=group
    pytest bench/bench_kernels.py --benchmark-only --benchmark-columns=min,median,ops

Files are named ``bench_*.py``; this conftest collects them when ``bench/`` (or a parent)
is given to pytest, so the project's ``python_files`` setting needs no change.  Each
benchmark sits in one ``benchmark.group`` with the baseline it is compared with (NumPy
reference, ``np.copyto`` memcpy, PyTorch when importable), on the same inputs, and records
throughput (GB/s, GFLOP/s, samples/s, from the best round) in ``extra_info``.  Without
pytest-benchmark installed the suites are not collected (``pip install ".[test]"``).

The cases themselves — inputs and the callables of fastdrop and of each baseline — come
from ``fastdrop.benchmarks.cases`` (one module per family; baselines from
``fastdrop.benchmarks.peers``): the same functions ``python -m fastdrop bench`` times.
These files only choose sizes, thread counts and groups.
"""
import os

import pytest

import fastdrop
from fastdrop.benchmarks.harness import cpu_count as _cpu_count

try:
    import pytest_benchmark  # noqa: F401
    HAVE_BENCHMARK = True
except ImportError:
    HAVE_BENCHMARK = False
    collect_ignore_glob = ["bench_*.py"]

#: "all threads" as used throughout: cores this process may run on
ALL_THREADS = _cpu_count()


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` as test modules (explicitly named files are collected by
    pytest itself: do not collect them twice)."""
    if not HAVE_BENCHMARK or file_path.suffix != ".py" or \
            not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def pytest_report_header(config):
    info = fastdrop.cpu_info()
    if not HAVE_BENCHMARK:
        return "fastdrop bench: pytest-benchmark is not installed: suites not collected"
    blas = _blas_info()
    return (f"fastdrop {info['version']}: {info['isa']} kernels, OpenMP "
            f"{'on' if info['openmp'] else 'off'}, all threads = {ALL_THREADS}; "
            f"numpy BLAS: {blas or 'threads not controlled (install threadpoolctl)'}; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} "
            f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")


def _blas_info():
    try:
        import threadpoolctl
        for i in threadpoolctl.threadpool_info():
            if i.get("user_api") == "blas":
                return f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
    except Exception:
        pass
    return None


def _set_blas_threads(n):
    """NumPy's BLAS thread count (no-op without threadpoolctl); returns a restore fn."""
    try:
        import threadpoolctl
    except ImportError:
        return lambda: None
    lim = threadpoolctl.threadpool_limits(limits=n, user_api="blas")
    return lim.restore_original_limits


@pytest.fixture
def threads():
    """``threads(n)`` sets n threads on every side — fastdrop, NumPy's BLAS (via
    threadpoolctl), torch if imported — for one benchmark; restored afterwards."""
    import sys
    old_fd = fastdrop.get_num_threads()
    torch = sys.modules.get("torch")
    old_torch = torch.get_num_threads() if torch is not None else None
    restores = []

    def set_(n):
        fastdrop.set_num_threads(n)
        restores.append(_set_blas_threads(n))
        t = sys.modules.get("torch")
        if t is not None:
            t.set_num_threads(n)

    yield set_
    fastdrop.set_num_threads(old_fd)
    for r in reversed(restores):
        r()
    if torch is not None and old_torch is not None:
        torch.set_num_threads(old_torch)


def _record(benchmark, *, nbytes=None, flops=None, samples=None, **info):
    """Store throughput figures in ``extra_info`` from the best round (call after the run):
    ``GB/s`` for bytes moved, ``GFLOP/s``, ``samples/s``; plus any ``info`` given."""
    st = getattr(benchmark, "stats", None)
    best = median = None
    if st is not None and getattr(st, "stats", None) is not None:
        best, median = st.stats.min, st.stats.median
    benchmark.extra_info.update(info)
    if best:
        if nbytes:
            benchmark.extra_info["bytes"] = nbytes
            benchmark.extra_info["GB/s"] = round(nbytes / best / 1e9, 3)
            benchmark.extra_info["GB/s (median)"] = round(nbytes / median / 1e9, 3)
        if flops:
            benchmark.extra_info["GFLOP/s"] = round(flops / best / 1e9, 3)
            benchmark.extra_info["GFLOP/s (median)"] = round(flops / median / 1e9, 3)
        if samples:
            benchmark.extra_info["samples/s"] = round(samples / best, 1)
            benchmark.extra_info["samples/s (median)"] = round(samples / median, 1)


@pytest.fixture
def record():
    """``record(benchmark, nbytes=..., flops=..., samples=..., **info)`` after the run."""
    return _record

"""The C core never aborts: allocation failure is a MemoryError and the process goes on;
buffers can be released while other threads run GEMMs; set_num_threads warns above the
core count."""
import os
import subprocess
import tempfile
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

import fastdrop
from fastdrop import _core, kernels as K
from helpers import needs_source_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics: Linux")
def test_gemm_packing_allocation_failure_raises_memoryerror():
    code = textwrap.dedent("""
        import ctypes, resource, sys
        # large blocks from mmap, never from free heap space (glibc's threshold is dynamic)
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        import numpy as np
        from fastdrop import _core
        rng = np.random.default_rng(0)
        _core.set_num_threads(1)  # one buffer of a known size: ~2.8 MB for B panels
        a = rng.standard_normal((256, 1024)).astype(np.float32)
        b = rng.standard_normal((1024, 4096)).astype(np.float32)
        c = np.zeros((256, 4096), np.float32)
        _core.release_buffers()
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        # room for small allocations, not for the ~2.8 MB packing buffer
        resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 10), hard))
        try:
            _core.gemm(a, b, c, False, False, 1.0, 0.0)
        except MemoryError as e:
            print("MemoryError:", e)
        else:
            print("no error")
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        _core.gemm(a, b, c, False, False, 1.0, 0.0)
        ref = a.astype(np.float64) @ b.astype(np.float64)
        err = float(np.abs(c - ref).max())
        print("after", err)
        sys.exit(0 if err < 1e-2 else 3)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastdrop.__file__)), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MemoryError: gemm 256x4096x1024" in r.stdout, r.stdout + r.stderr
    assert "after" in r.stdout


def test_release_buffers_while_other_threads_run_gemms():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((200, 300)).astype(np.float32)
    b = rng.standard_normal((300, 250)).astype(np.float32)
    want = K.gemm(a, b)
    bad = []
    stop = threading.Event()

    def work():
        for _ in range(60):
            if not np.array_equal(K.gemm(a, b), want):
                bad.append(1)
        stop.set()

    def release():
        while not stop.is_set():
            _core.release_buffers()

    ts = [threading.Thread(target=work) for _ in range(3)] + [threading.Thread(target=release)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_set_num_threads_above_core_count_warns():
    n = (os.cpu_count() or 1) + 1
    try:
        with pytest.warns(RuntimeWarning, match="more than the cores"):
            fastdrop.set_num_threads(n)
        assert fastdrop.get_num_threads() == (n if _core.openmp_enabled() else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fastdrop.set_num_threads(1)
    finally:
        fastdrop.set_num_threads(None)


@pytest.mark.parametrize("threads", [3, 5])
def test_more_threads_than_cores_still_bitwise(threads):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((333, 257)).astype(np.float32)
    b = rng.standard_normal((257, 199)).astype(np.float32)
    _core.set_num_threads(1)
    want = K.gemm(a, b)
    try:
        _core.set_num_threads(threads)
        np.testing.assert_array_equal(K.gemm(a, b), want)
    finally:
        _core.set_num_threads(0)


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "setup.py")),
                    reason="source tree (setup.py) not found")
@needs_source_tree("setup.py")
def test_setup_py_disables_fp_contraction():
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert '"-ffp-contract=off"' in f.read()


@pytest.mark.parametrize("pool", ["1", "0"])
def test_threading_backends_agree(pool):
    """fastdrop's own pool and the OpenMP baseline give the same bits (subprocess)."""
    code = textwrap.dedent("""
        import numpy as np, hashlib
        from fastdrop import _core, kernels as K
        _core.set_num_threads(2)
        rng = np.random.default_rng(3)
        a = rng.standard_normal((300, 400)).astype(np.float32)
        b = rng.standard_normal((400, 350)).astype(np.float32)
        x = rng.standard_normal(1 << 20).astype(np.float32)
        out = np.empty_like(x)
        mask = np.zeros(len(x) // 8, np.uint8)
        _core.dropout_forward(x, out, 5, 0.3, mask)
        h = hashlib.sha256(K.gemm(a, b).tobytes() + K.gemm(a[:1], b).tobytes()
                           + K.gemm(a, np.ascontiguousarray(b[:, :7])).tobytes() + out.tobytes()).hexdigest()
        print(_core.pool_active(), h)
    """)
    env = dict(os.environ, FASTDROP_POOL=pool, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastdrop.__file__)), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    active, digest = r.stdout.split()
    _core.set_num_threads(1)
    try:
        rng = np.random.default_rng(3)
        a = rng.standard_normal((300, 400)).astype(np.float32)
        b = rng.standard_normal((400, 350)).astype(np.float32)
        x = rng.standard_normal(1 << 20).astype(np.float32)
        out = np.empty_like(x)
        mask = np.zeros(len(x) // 8, np.uint8)
        _core.dropout_forward(x, out, 5, 0.3, mask)
        import hashlib
        h = hashlib.sha256(K.gemm(a, b).tobytes() + K.gemm(a[:1], b).tobytes()
                           + K.gemm(a, np.ascontiguousarray(b[:, :7])).tobytes() + out.tobytes()).hexdigest()
    finally:
        _core.set_num_threads(0)
    assert digest == h
    if sys.platform.startswith("linux") and _core.openmp_enabled():
        assert active == ("True" if pool == "1" else "False")

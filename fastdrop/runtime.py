"""Run-time settings of the kernels: threads, the SIMD path chosen, denormal flushing.
Re-exported at the package top (``fastdrop.set_num_threads`` ...)."""
from . import _core
from ._version import __version__


def set_num_threads(n):
    """Set the number of threads every kernel uses (wins over OMP_NUM_THREADS).

    ``n`` is a positive int; ``None`` or 0 restores the default (OMP_NUM_THREADS, else the
    number of cores).  Without OpenMP the package always runs single-threaded.
    """
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0 (0 = default), got {n}")
    import os
    cores = os.cpu_count() or 1
    if n > cores:
        import warnings
        warnings.warn(f"set_num_threads({n}) on a machine with {cores} logical CPUs: kernels "
                      f"will run up to {n} threads, more than the cores, which time-share "
                      f"them (usually slower); the value is used as given",
                      RuntimeWarning, stacklevel=2)
    _core.set_num_threads(n)


def get_num_threads():
    """The number of threads kernels use."""
    return _core.get_num_threads()


def cpu_info():
    """What this build and CPU run: a dict with keys
    ``isa`` (the chosen path), ``compiled`` and ``supported`` (tuples of path names),
    ``openmp`` (bool), ``threads`` (int), ``bf16`` (the path of bf16 GEMMs under the
    'mixed_bfloat16' policy: 'amx', 'avx512bf16' or 'portable'), ``bf16_supported``,
    ``amx`` (bool: AMX tiles usable, the OS permission included), ``thread_pool`` ('fastdrop' for fastdrop's own
    helper threads, 'openmp' or 'none'), ``flush_denormals`` (bool), ``version``, and,
    when the build provides them, ``gemm_table`` (the GEMM parameter table in use) with its
    block sizes ``gemm_blocks`` (dict: mr, nr, mc, kc, nc)."""
    info = {
        "version": __version__,
        "isa": _core.isa(),
        "compiled": _core.isa_compiled(),
        "supported": _core.isa_supported(),
        "openmp": _core.openmp_enabled(),
        "threads": _core.get_num_threads(),
        "thread_pool": ("fastdrop" if _core.pool_active()
                        else "openmp" if _core.openmp_enabled() else "none"),
        "flush_denormals": _core.get_flush_denormals(),
    }
    if hasattr(_core, "bf16_path"):
        # the path of the bf16 GEMMs ('mixed_bfloat16' policy): 'amx' (AMX-BF16 tiles),
        # 'avx512bf16' (vdpbf16ps) or 'portable' (bf16-rounded operands, fp32 FMA)
        info["bf16"] = _core.bf16_path()
        info["bf16_supported"] = _core.bf16_paths_supported()
        info["amx"] = "amx" in info["bf16_supported"]
        note = _core.bf16_amx_note()
        if note:
            info["amx_note"] = note
    if hasattr(_core, "gemm_table"):
        name, blocks = _core.gemm_table()
        info["gemm_table"] = name
        info["gemm_blocks"] = blocks
    return info


def set_flush_denormals(on=True):
    """Flush subnormal floats to zero inside fastdrop's kernels (default: on).

    Subnormal numbers (|x| < 1.2e-38) are 10-100x slower to compute with on x86; in long
    training runs Adam's moment estimates of weights that stop receiving gradient decay
    into that range.  With flushing on, every thread running a fastdrop kernel sets the
    FTZ and DAZ bits of its MXCSR on entry and restores the caller's value on exit, so
    NumPy and your own code keep IEEE behaviour.  ``set_flush_denormals(False)`` gives
    full IEEE subnormals inside the kernels too.  Results stay bitwise identical across
    thread counts and ISA paths either way.  Returns the previous setting.
    """
    if not isinstance(on, (bool, int)) and not hasattr(on, "__bool__"):
        raise TypeError(f"on must be a bool, got {type(on).__name__}")
    old = _core.get_flush_denormals()
    _core.set_flush_denormals(bool(on))
    return old


def get_flush_denormals():
    """True if fastdrop's kernels flush subnormals to zero (see set_flush_denormals)."""
    return _core.get_flush_denormals()

"""Build fastdrop: one Cython extension plus the C kernels in csrc/.

Every C file is compiled with the baseline flags of the target (plain x86-64 on x86);
files whose name carries an ISA tag get that ISA's flags on top, and only those:

    *amx*.c        -> the avx512bf16 flags + -mamx-tile -mamx-bf16
    *avx512bf16*.c -> the avx512 flags + -mavx512bf16
    *avx512*.c     -> -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma
    *avx2*.c       -> -mavx2 -mfma
(the bf16 ones only when the compiler accepts them; else the bf16 GEMM is portable C)

The kernel to run is chosen at import time (csrc/cpu.c).  The build never tunes for the
build machine's CPU nor relaxes IEEE floating point: wheels run on any x86-64.
-ffp-contract=off: the compiler never fuses a*b+c into an FMA on its own (clang does by
default), so plain-C kernels give the same bits on every ISA path; FMAs are explicit.

Environment switches (for build variants that must keep working):
    FASTDROP_NO_OPENMP=1   build without OpenMP (single-threaded)
    FASTDROP_NO_SIMD=1     build only the portable C path (what non-x86 CPUs get)
    FASTDROP_SANITIZE=1    build with -fsanitize=address,undefined (debug; see README)
"""
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

ISA_FLAGS = {  # a literal: tests/test_build.py reads it without running setup()
    "amx": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma",
            "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
    "avx512bf16": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma",
                   "-mavx512bf16"],
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
}
# Compilers without these ISAs (GCC < 11 for AMX, < 10 for AVX512-BF16) skip the files:
# the bf16 GEMM then runs its portable path.  An AMX file needs the AVX512-BF16 one.
ISA_PROBES = {
    "avx512bf16": """#include <immintrin.h>
int main(void) { __m512 a = _mm512_set1_ps(1.0f); __m512bh b = _mm512_cvtne2ps_pbh(a, a);
return (int)_mm512_reduce_add_ps(_mm512_dpbf16_ps(a, b, b)) == 0; }
""",
    "amx": """#include <immintrin.h>
int main(void) { volatile int z = 0; if (z) { _tile_zero(0); _tile_dpbf16ps(0, 1, 2);
_tile_release(); } return 0; }
""",
}


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def is_x86():
    m = platform.machine().lower()
    return m in ("x86_64", "amd64", "i386", "i686", "x86")


def isa_of(path):
    name = os.path.basename(path)
    for isa in ("amx", "avx512bf16", "avx512", "avx2"):
        if isa in name:
            return isa
    return None


def c_sources():
    files = sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))
    if env_flag("FASTDROP_NO_SIMD") or not is_x86():
        files = [f for f in files if isa_of(f) is None]
    return files


def compiler_accepts(compiler, flags, code, link_flags=()):
    """Try to compile and link `code` with `flags`; True on success."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        devnull = open(os.devnull, "w")
        old_out, old_err = os.dup(1), os.dup(2)
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                     extra_postargs=list(link_flags))
            return True
        except Exception:
            return False
        finally:
            os.dup2(old_out, 1)
            os.dup2(old_err, 2)
            os.close(old_out)
            os.close(old_err)
            devnull.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OMP_PROBE = """
#include <omp.h>
int main(void) { int s = 0;
#pragma omp parallel for reduction(+:s)
for (int i = 0; i < 8; i++) s += i;
return s == 28 ? 0 : 1; }
"""


class BuildExt(build_ext):
    """Compile each C file with its own flags, then link them into the extension."""

    def build_extension(self, ext):
        cc = self.compiler
        msvc = cc.compiler_type == "msvc"
        base = ["/O2"] if msvc else ["-O3", "-std=c11", "-fPIC", "-fno-strict-aliasing", "-fno-math-errno",
                                     "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"]
        link = []
        macros = []
        if env_flag("FASTDROP_SANITIZE"):
            base += ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined"]
            link += ["-fsanitize=address,undefined"]
        omp = []
        if not env_flag("FASTDROP_NO_OPENMP"):
            flag = "/openmp" if msvc else "-fopenmp"
            if compiler_accepts(cc, [flag], OMP_PROBE, [flag]):
                omp = [flag]
                link.append(flag)
            else:
                print("fastdrop: OpenMP not available; building single-threaded")
        srcs = c_sources()
        for isa in ("avx512bf16", "amx"):
            if any(isa_of(s) == isa for s in srcs) and not (
                    (isa != "amx" or any(isa_of(s) == "avx512bf16" for s in srcs))
                    and compiler_accepts(cc, base + ISA_FLAGS[isa], ISA_PROBES[isa])):
                print(f"fastdrop: the compiler does not accept {' '.join(ISA_FLAGS[isa][-2:])}; "
                      f"building without the {isa} bf16 kernel")
                srcs = [s for s in srcs if isa_of(s) != isa]
        isas = {isa_of(s) for s in srcs} - {None}
        for isa in sorted(isas):
            macros.append(("FD_HAVE_" + isa.upper(), "1"))
        tmp = self.build_temp
        objects = []
        for src in srcs:
            isa = isa_of(src)
            flags = base + omp + (ISA_FLAGS[isa] if isa else [])
            objects += cc.compile([src], output_dir=tmp, macros=macros,
                                  include_dirs=["csrc"], extra_postargs=flags,
                                  depends=glob.glob("csrc/**/*.h", recursive=True))
        ext.extra_objects = objects
        ext.extra_compile_args = (ext.extra_compile_args or []) + omp + (
            ["-O1", "-g", "-fsanitize=address,undefined"] if env_flag("FASTDROP_SANITIZE") else [])
        ext.extra_link_args = (ext.extra_link_args or []) + link
        ext.define_macros = (ext.define_macros or []) + macros
        super().build_extension(ext)


def read(path):
    with open(os.path.join(HERE, path), encoding="utf-8") as f:
        return f.read()


def version():
    for line in read("fastdrop/_version.py").splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("no version")


extensions = [
    Extension(
        "fastdrop._core",
        ["fastdrop/_core.pyx"],
        # every C source and header: a change to any of them relinks the extension
        depends=sorted(glob.glob("csrc/**/*.[ch]", recursive=True)) + ["fastdrop/_core.pxd"]
        + sorted(glob.glob("fastdrop/*.pxi")),
        include_dirs=["csrc", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    version=version(),
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)

"""Build hygiene: what instructions end up where, and the portable path in a fresh process.

* The C files that are not per-ISA (no ``avx2``/``avx512`` in the name) are compiled with
  setup.py's base flags and must contain no AVX/AVX2/AVX-512 instruction: the package has
  to import and run on any x86-64 CPU, and only the per-ISA files may carry ISA flags.
* The installed extension contains the SIMD code it claims to (``cpu_info()['compiled']``)
  and none when built with ``FASTDROP_NO_SIMD=1``.
* ``FASTDROP_ISA=ref`` in a subprocess imports, and runs gemm, dropout and a short
  training, correctly.

The source checks need the source tree (found next to this file, or in
``$FASTDROP_SOURCE_DIR``), gcc and objdump on x86-64; they skip otherwise (e.g. when the
tests run against an installed wheel from a copy of tests/).
"""
import ast
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdrop
from fastdrop import _core

X86_64 = platform.machine().lower() in ("x86_64", "amd64")
HAVE_TOOLS = shutil.which("gcc") is not None and shutil.which("objdump") is not None


def _source_dir():
    """FASTDROP_SOURCE_DIR if set, else the checkout beside the tests when the fastdrop
    under test is that checkout's (not an installed wheel): (dir or None, skip reason)."""
    from helpers import source_tree_reason
    d = os.environ.get("FASTDROP_SOURCE_DIR")
    if d:
        reason = None
    else:
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        reason = source_tree_reason("setup.py", os.path.join("csrc", "fastdrop.h"), root=d)
    if reason is None and not (os.path.isfile(os.path.join(d, "setup.py")) and
                               os.path.isfile(os.path.join(d, "csrc", "fastdrop.h"))):
        reason = f"source tree (csrc/, setup.py) not found in {d}"
    return (None, reason) if reason else (os.path.abspath(d), None)


SRC, _NO_SRC = _source_dir()
needs_x86_tools = pytest.mark.skipif(not (X86_64 and HAVE_TOOLS),
                                     reason="needs gcc and objdump on x86-64")
needs_source = pytest.mark.skipif(SRC is None, reason=_NO_SRC or "")

# setup.py's flags as of this writing; replaced by the literals parsed out of setup.py
# below whenever the source tree is present
BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-fno-strict-aliasing", "-fno-math-errno",
              "-Wall", "-Wno-unknown-pragmas"]
ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
}
DEFINES = ["-DFD_HAVE_AVX2=1", "-DFD_HAVE_AVX512=1"]

# Operands / mnemonics that need more than baseline x86-64 (SSE2):
#   %ymm* / %zmm*            256/512-bit registers (VEX.256 or EVEX)
#   %k0..%k7                 AVX-512 mask registers (operands and {%kN} write masks)
#   v-prefixed mnemonics     every VEX/EVEX-encoded instruction (vaddps, vfmadd..., vzeroupper)
WIDE_REG = re.compile(r"%[yz]mm\d+")
MASK_REG = re.compile(r"%k[0-7]\b")
NOT_AVX_V = ("verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmread", "vmwrite",
             "vmxoff", "vmxon", "vmptrld", "vmptrst", "vmclear", "vmfunc")


def _setup_py_flags():
    """(base flags, ISA flag dict) as literals parsed out of setup.py (no import: it
    runs setup())."""
    tree = ast.parse(open(os.path.join(SRC, "setup.py")).read())
    base = isa = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "ISA_FLAGS":
                isa = ast.literal_eval(node.value)
            elif name == "base" and base is None:
                v = node.value
                base = ast.literal_eval(v.orelse if isinstance(v, ast.IfExp) else v)
    return base, isa


def _non_avx_lines(disasm):
    """Lines of `objdump -d --no-show-raw-insn` output that use AVX-or-later."""
    bad = []
    for line in disasm.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not re.match(r"\s*[0-9a-f]+:$", parts[0]):
            continue
        insn = parts[1].strip()
        mnemonic = insn.split()[0] if insn else ""
        if WIDE_REG.search(insn) or MASK_REG.search(insn) or \
                (mnemonic.startswith("v") and not mnemonic.startswith(NOT_AVX_V)):
            bad.append(line.strip())
    return bad


def _disasm(path):
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], check=True,
                          capture_output=True, text=True).stdout


def _compile(src, out_dir, extra=()):
    obj = os.path.join(out_dir, os.path.relpath(src, SRC).replace(os.sep, "_") + ".o")
    cmd = ["gcc", *BASE_FLAGS, "-fopenmp", "-I" + os.path.join(SRC, "csrc"), *DEFINES,
           *extra, "-c", src, "-o", obj]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return obj


def _isa_of(path):
    name = os.path.basename(path)
    return next((isa for isa in ("amx", "avx512bf16", "avx512", "avx2") if isa in name), None)


if SRC is not None:
    try:
        _parsed = _setup_py_flags()
    except (OSError, SyntaxError, ValueError):
        _parsed = (None, None)
    BASE_FLAGS = _parsed[0] or BASE_FLAGS
    ISA_FLAGS = _parsed[1] or ISA_FLAGS


@needs_source
def test_setup_py_flags_parse_and_keep_isa_flags_out_of_the_baseline():
    base, isa = _setup_py_flags()
    assert base and isa, "could not read `base = [...]` / `ISA_FLAGS = {...}` from setup.py"
    assert not [f for f in base if f.startswith(("-m", "/arch", "-Ofast", "-ffast-math"))], \
        f"ISA/unsafe flags in setup.py's baseline flags: {base}"
    assert set(isa) == {"avx2", "avx512", "avx512bf16", "amx"}
    assert "-mavx512f" in isa["avx512"] and "-mavx2" in isa["avx2"]
    assert "-march=native" not in open(os.path.join(SRC, "setup.py")).read().replace(
        "Never -march=native", "")


@needs_source
@needs_x86_tools
def test_baseline_objects_have_no_avx(tmp_path):
    srcs = sorted(glob.glob(os.path.join(SRC, "csrc", "**", "*.c"), recursive=True))
    baseline = [s for s in srcs if _isa_of(s) is None]
    assert len(baseline) >= 5, baseline
    offenders = {}
    for src in baseline:
        bad = _non_avx_lines(_disasm(_compile(src, str(tmp_path))))
        if bad:
            offenders[os.path.relpath(src, SRC)] = bad[:5] + [f"... {len(bad)} lines"]
    assert not offenders, "AVX+ instructions in baseline objects:\n" + json.dumps(
        offenders, indent=1)


@needs_source
@needs_x86_tools
def test_detector_flags_isa_objects(tmp_path):
    """Positive control: the same check does find the SIMD in the per-ISA files."""
    srcs = sorted(glob.glob(os.path.join(SRC, "csrc", "**", "*avx512*.c"), recursive=True))
    assert srcs
    for src in srcs:  # (the bf16 files with their own flags and FD_HAVE_ macro)
        isa = _isa_of(src)
        d = _disasm(_compile(src, str(tmp_path), ISA_FLAGS[isa] + (
            [f"-DFD_HAVE_{isa.upper()}"] if isa != "avx512" else [])))
        assert _non_avx_lines(d), src
        assert re.search(r"%zmm\d+", d), f"{src}: no zmm register used"


@needs_x86_tools
def test_installed_extension_holds_the_compiled_paths():
    d = _disasm(_core.__file__)
    compiled = fastdrop.cpu_info()["compiled"]
    assert "ref" in compiled
    zmm = len(re.findall(r"%zmm\d+", d))
    ymm = len(re.findall(r"%ymm\d+", d))
    if "avx512" in compiled:
        assert zmm > 100, f"avx512 reported compiled but only {zmm} zmm uses"
    else:
        assert zmm == 0
    if "avx2" in compiled:
        assert ymm > 100, f"avx2 reported compiled but only {ymm} ymm uses"
    if compiled == ("ref",):      # FASTDROP_NO_SIMD=1 build: nothing but baseline code
        assert _non_avx_lines(d) == []


REF_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("error")          # an unusable FASTDROP_ISA would warn
    import fastdrop
    from fastdrop import kernels as K, reference as R
    info = fastdrop.cpu_info()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((67, 129), dtype=np.float32)
    b = rng.standard_normal((129, 45), dtype=np.float32)
    g = K.gemm(a, b)
    gerr = float(np.abs(g - R.gemm(a, b)).max())
    gt = K.gemm(a.T.copy(), b, trans_a=True)
    x = rng.standard_normal(3 * 4096 + 5, dtype=np.float32)
    y, mask = K.dropout(x, 0.3, 12345)
    yr, mr = R.dropout(x, 0.3, 12345)
    x_tr = rng.standard_normal((256, 20)).astype(np.float32)
    y_tr = (x_tr[:, 0] + x_tr[:, 1] > 0).astype(np.int64)
    m = fastdrop.Sequential([fastdrop.Dense(32, activation="relu", input_dim=20),
                             fastdrop.Dropout(0.2),
                             fastdrop.Dense(2, activation="softmax")], seed=3)
    m.compile(fastdrop.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    h = m.fit(x_tr, y_tr, epochs=6, batch_size=32, verbose=0)
    print(json.dumps({
        "isa": info["isa"], "gemm_err": gerr, "gemm_trans_equal": bool((g == gt).all()),
        "mask_equal": bool((mask == mr).all()),
        "dropout_equal": bool((y.view(np.uint32) == yr.view(np.uint32)).all()),
        "loss": h.history["loss"], "acc": h.history["accuracy"][-1],
        "weights": [w.ravel()[:50].tolist() for w in m.get_weights()],
    }))
""")


def _run_isa(isa):
    env = dict(os.environ)
    if isa is None:
        env.pop("FASTDROP_ISA", None)
    else:
        env["FASTDROP_ISA"] = isa
    # run from the directory that holds the imported package, so the child imports the
    # same fastdrop (installed or in-place build) as this process
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastdrop.__file__)))
    r = subprocess.run([sys.executable, "-c", REF_SCRIPT], capture_output=True, text=True,
                       env=env, cwd=here, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_fastdrop_isa_ref_subprocess_runs_correctly():
    ref = _run_isa("ref")
    assert ref["isa"] == "ref"
    assert ref["gemm_err"] < 1e-3
    assert ref["gemm_trans_equal"]
    assert ref["mask_equal"] and ref["dropout_equal"]
    assert ref["loss"][-1] < ref["loss"][0] and ref["acc"] > 0.85
    best = _run_isa(None)
    # the same training on the fastest path: same masks, same data order, only the
    # summation order inside GEMM may differ -> weights agree closely
    for wr, wb in zip(ref["weights"], best["weights"]):
        np.testing.assert_allclose(wr, wb, rtol=1e-3, atol=1e-4)
    if best["isa"] == "ref":
        assert ref == best

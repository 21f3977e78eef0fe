#!/usr/bin/env bash
# Build the variants that must keep working and run the kernel and model tests on each:
#
#   FASTDROP_NO_OPENMP=1   single-threaded build (no -fopenmp, no libgomp)
#   FASTDROP_NO_SIMD=1     portable C only (what non-x86 CPUs get)
#
#   tools/check_variants.sh [VARIANT...]     (default: both; names as above, or no_openmp/no_simd)
#
# Each variant is built from a copy of the working tree (uncommitted changes included; the
# tree itself gets no build artifacts) into its own venv under a temporary directory; the
# copy's fastdrop/ is then deleted and the tests run in the copy, so `import fastdrop` can
# only find the installed build while tests that compile csrc/ or tools/ still find them.
# The two variants build and test in parallel (one compiler each on 2 cores).
# Env: PYTHON (default python3), KEEP=1 keeps the temporary directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(FASTDROP_NO_OPENMP FASTDROP_NO_SIMD)

tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastdrop-variants.XXXXXX")"
[ "${KEEP:-0}" = 1 ] && echo "check_variants: keeping $tmp" || trap 'rm -rf "$tmp"' EXIT

TESTS=()
for t in test_kernels.py test_dropout.py test_gemm.py test_models.py test_build.py \
         test_properties.py test_threads.py; do
  [ -f "$ROOT/tests/$t" ] && TESTS+=("tests/$t")
done

run_variant() {   # $1 = FASTDROP_NO_OPENMP | FASTDROP_NO_SIMD
  local var="$1" dir="$tmp/$1" t0=$SECONDS
  mkdir -p "$dir/src"
  (cd "$ROOT" && tar --exclude=./.git --exclude=./build --exclude=./dist \
      --exclude=./wheelhouse --exclude='./.venv*' --exclude='./venv*' --exclude='*.so' \
      --exclude='*.o' --exclude=./fastdrop/_core.c --exclude='*.egg-info' -cf - .) \
    | tar -xf - -C "$dir/src"
  "$PYTHON" -m venv "$dir/venv"
  local py="$dir/venv/bin/python"
  "$py" -m pip install -q --disable-pip-version-check "setuptools>=64" wheel "Cython>=3.0" \
      "numpy>=2.0" "pytest>=7" "hypothesis>=6"
  env "$var=1" "$py" -m pip install -q --disable-pip-version-check --no-build-isolation \
      "$dir/src"
  local t_build=$((SECONDS - t0))
  # the switch must have taken effect (guards against a cached or stale build)
  (cd "$dir" && "$py" - "$var" <<'PY'
import sys
import fastdrop
info = fastdrop.cpu_info()
print(f"check_variants: {sys.argv[1]}=1 -> {info}")
if sys.argv[1] == "FASTDROP_NO_OPENMP":
    assert info["openmp"] is False and info["threads"] == 1, info
else:
    assert info["compiled"] == ("ref",) and info["isa"] == "ref", info
PY
  )
  rm -rf "$dir/src/fastdrop"
  (cd "$dir/src" && "$dir/venv/bin/pytest" -q -p no:cacheprovider -m "not slow" "${TESTS[@]}")
  echo "check_variants: $var OK (build ${t_build}s, total $((SECONDS - t0))s)"
}

t_all=$SECONDS
pids=()
for v in "${variants[@]}"; do
  case "$v" in
    no_openmp|FASTDROP_NO_OPENMP) v=FASTDROP_NO_OPENMP ;;
    no_simd|FASTDROP_NO_SIMD) v=FASTDROP_NO_SIMD ;;
    *) echo "check_variants: unknown variant $v" >&2; exit 2 ;;
  esac
  run_variant "$v" > "$tmp/$v.log" 2>&1 &
  pids+=("$!:$v")
done
fail=0
for p in "${pids[@]}"; do
  v="${p#*:}"
  if wait "${p%%:*}"; then status=passed; else status=FAILED; fail=1; fi
  echo "================ $v: $status"
  grep -v -E "^(WARNING: Location|  )" "$tmp/$v.log" | tail -25
done
echo "check_variants: ${#variants[@]} variant(s) in $((SECONDS - t_all))s"
exit $fail

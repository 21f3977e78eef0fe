#!/usr/bin/env bash
# Memory and UB checks of fastdrop's C code.
#
#   tools/sanitize.sh [pytest] [driver] [valgrind]      (default: all three)
#
# pytest    build the package with FASTDROP_SANITIZE=1 (-fsanitize=address,undefined) into a
#           venv under a temporary directory and run the kernel, dropout, gemm, model,
#           property and thread tests under it.  Python itself is not instrumented, so libasan is LD_PRELOADed; leak
#           detection is off there (Python's own allocations at exit are not ours; the C
#           kernels' leaks are checked by the driver below).  Any ASan/UBSan report fails.
# driver    tools/leak_driver.c (every C kernel, every ISA path, 1 and 2 threads) built with
#           -fsanitize=address,undefined: ASan + UBSan + LeakSanitizer at exit.
# valgrind  the same driver built plainly, under valgrind --leak-check=full
#           --error-exitcode=1 (skipped if valgrind is absent; no AVX-512 under valgrind).
#
# Builds from a copy of the working tree (uncommitted changes included, no artifacts left
# in it).  Env: PYTHON (default python3), KEEP=1 keeps the temporary directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(pytest driver valgrind)

tmp="$(mktemp -d "${TMPDIR:-/tmp}/fastdrop-sanitize.XXXXXX")"
[ "${KEEP:-0}" = 1 ] && echo "sanitize: keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/logs"
(cd "$ROOT" && tar --exclude=./.git --exclude=./build --exclude=./dist --exclude=./wheelhouse \
    --exclude='./.venv*' --exclude='./venv*' --exclude='*.so' --exclude='*.o' \
    --exclude=./fastdrop/_core.c --exclude='*.egg-info' -cf - .) | tar -xf - -C "$tmp/src"
SRC="$tmp/src"
LIBASAN="$(gcc -print-file-name=libasan.so)"
[ -f "$LIBASAN" ] || { echo "sanitize: libasan.so not found (gcc -print-file-name)" >&2; exit 2; }
fail=0

# Print and count sanitizer reports written to $tmp/logs/<prefix>.*
reports() {
  local n=0 f
  for f in "$tmp"/logs/"$1".*; do
    [ -s "$f" ] || continue
    n=$((n + 1)); echo "---- $f"; head -60 "$f"
  done
  return $((n > 0))
}

san_env() {   # env for running instrumented code; $1 = log prefix, $2 = detect_leaks
  echo "ASAN_OPTIONS=detect_leaks=$2:abort_on_error=0:halt_on_error=1:log_path=$tmp/logs/$1-asan:strict_string_checks=1:detect_stack_use_after_return=1"
  echo "UBSAN_OPTIONS=print_stacktrace=1:report_error_type=1:halt_on_error=0:log_path=$tmp/logs/$1-ubsan"
}

step_pytest() {
  local t0=$SECONDS
  "$PYTHON" -m venv "$tmp/venv"
  local py="$tmp/venv/bin/python"
  "$py" -m pip install -q --disable-pip-version-check "setuptools>=64" wheel "Cython>=3.0" \
      "numpy>=2.0" "pytest>=7" "hypothesis>=6"
  FASTDROP_SANITIZE=1 "$py" -m pip install -q --disable-pip-version-check \
      --no-build-isolation "$SRC"
  echo "sanitize: sanitized build in $((SECONDS - t0))s"
  # run in a copy of the tree without fastdrop/: imports the sanitized install only
  local run="$tmp/run"
  mkdir -p "$run" && (cd "$SRC" && tar --exclude=./fastdrop --exclude=./build -cf - .) | tar -xf - -C "$run"
  local tests=() t
  for t in test_kernels.py test_dropout.py test_gemm.py test_models.py test_properties.py \
           test_threads.py; do
    [ -f "$run/tests/$t" ] && tests+=("tests/$t")
  done
  local rc=0 envs
  mapfile -t envs < <(san_env pytest 0)
  (cd "$run" && env LD_PRELOAD="$LIBASAN" "${envs[@]}" \
      "$tmp/venv/bin/pytest" -q -p no:cacheprovider -m "not slow" "${tests[@]}") || rc=$?
  echo "sanitize: pytest under ASan+UBSan exit $rc in $((SECONDS - t0))s"
  reports pytest || { echo "sanitize: sanitizer reports above"; rc=1; }
  return $rc
}

build_driver() {   # $1 = output binary, rest = extra flags
  local out="$1"; shift
  local f=(-O2 -g -std=c11 -fopenmp -fno-strict-aliasing -fno-math-errno -I"$SRC/csrc" "$@")
  local objs=() s x o x86=0
  case "$(uname -m)" in x86_64|amd64) x86=1; f+=(-DFD_HAVE_AVX2=1 -DFD_HAVE_AVX512=1) ;; esac
  mkdir -p "$out.objs"
  for s in $(cd "$SRC" && find csrc -name '*.c' | sort); do
    [ $x86 = 1 ] || case "$s" in *avx*) continue ;; esac
    case "$s" in
      *avx512*) x=(-mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma) ;;
      *avx2*) x=(-mavx2 -mfma) ;;
      *) x=() ;;
    esac
    o="$out.objs/$(echo "$s" | tr / _).o"
    gcc "${f[@]}" "${x[@]}" -c "$SRC/$s" -o "$o"
    objs+=("$o")
  done
  gcc "${f[@]}" "$SRC/tools/leak_driver.c" "${objs[@]}" -lm -o "$out"
}

step_driver() {
  local t0=$SECONDS rc=0
  build_driver "$tmp/driver-asan" -fsanitize=address,undefined -fno-omit-frame-pointer
  local envs
  mapfile -t envs < <(san_env driver 1)
  env "${envs[@]}" "$tmp/driver-asan" || rc=$?
  echo "sanitize: leak_driver under ASan+UBSan+LSan exit $rc in $((SECONDS - t0))s"
  reports driver || { echo "sanitize: sanitizer reports above"; rc=1; }
  return $rc
}

step_valgrind() {
  command -v valgrind >/dev/null || { echo "sanitize: valgrind not installed, skipped"; return 0; }
  local t0=$SECONDS rc=0
  build_driver "$tmp/driver"
  valgrind --log-file="$tmp/logs/valgrind.txt" --leak-check=full \
      --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
      --error-exitcode=1 --suppressions="$SRC/tools/valgrind.supp" "$tmp/driver" || rc=$?
  grep -v -E "^==[0-9]+== *$" "$tmp/logs/valgrind.txt" | grep -E "ERROR SUMMARY|in use at exit|lost:|Invalid|uninitialised|^==[0-9]+==    (at|by) " | head -60
  # fd_release_buffers() frees the caller's packing buffer at once; a pool helper frees its
  # own at its next GEMM or when it goes idle, so one helper buffer (~130 KB) may still be
  # held at exit.  More than that (two or more buffers) is a leak.
  local inuse
  inuse="$(sed -n 's/.*in use at exit: \([0-9,]*\) bytes.*/\1/p' "$tmp/logs/valgrind.txt" | tr -d ,)"
  if [ -z "$inuse" ] || [ "$inuse" -gt 262144 ]; then
    echo "sanitize: ${inuse:-?} bytes still allocated at exit after fd_release_buffers() (limit 262144)"
    rc=1
  fi
  echo "sanitize: leak_driver under valgrind exit $rc in $((SECONDS - t0))s"
  return $rc
}

for s in "${steps[@]}"; do
  case "$s" in
    pytest|driver|valgrind) echo "==== sanitize: $s"; "step_$s" || { fail=1; echo "sanitize: $s FAILED"; } ;;
    *) echo "sanitize: unknown step $s (pytest, driver, valgrind)" >&2; exit 2 ;;
  esac
done
[ $fail = 0 ] && echo "sanitize: all clean" || echo "sanitize: FAILED"
exit $fail

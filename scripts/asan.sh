#!/usr/bin/env bash
# The compiled extension's C++ (the CPU kernels, and the index math they share with the CUDA kernels)
# under gcc's AddressSanitizer and UndefinedBehaviorSanitizer, over every test that does not need
# Triton: `make asan`. It builds an instrumented copy of the tree in build/asan/ (the checkout's own
# build is left alone) and runs pytest there with the sanitizers' runtimes preloaded; any finding
# stops the process, so the run fails.
#
#   PY=.venv/bin/python   the interpreter (its torch builds the extension; default: the dev venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-.venv/bin/python}
case $PY in */*) PY=$(realpath -s "$PY") ;; *) PY=$(command -v "$PY") ;; esac  # a venv's python stays a link
COPY=build/asan

rm -rf "$COPY" && mkdir -p "$COPY"
git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$COPY"
cd "$COPY"
ln -s ../kernels fused_sigreg/kernels  # an install maps kernels/ to fused_sigreg.kernels; the copy is not installed

echo "== building the CPU extension with -fsanitize=address,undefined (log: $COPY/build.log)"
FUSED_SIGREG_SANITIZE=address,undefined FUSED_SIGREG_BUILD_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
  "$PY" setup.py build_ext --inplace >build.log 2>&1 || { tail -30 build.log; exit 1; }
SO=$(ls fused_sigreg/_C.*.so)
# ldd's output is read whole first: `ldd | grep -q` under pipefail fails whenever grep's early exit
# meets ldd still writing (SIGPIPE), which made an instrumented build look uninstrumented
DEPS=$(ldd "$SO")
for lib in libasan libubsan; do
  grep -q "$lib" <<<"$DEPS" || { echo "$SO does not link $lib: the build is not instrumented" >&2; exit 1; }
done

export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# leaks are Python's and torch's own at exit, not the extension's
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export FUSED_SIGREG_BUILD_CUDA=0 FUSED_SIGREG_GOLDEN=${FUSED_SIGREG_GOLDEN:-$ROOT/../shared/golden/reference_cases.pt}
"$PY" -c 'import sys, fused_sigreg._C as c; sys.exit(0 if c.__file__.startswith(sys.argv[1]) else f"loaded {c.__file__}, not the instrumented copy")' "$PWD"

echo "== the suite without the Triton-only tests, extension instrumented"
# (Triton's interpreter aborts under AddressSanitizer in masked loads whose masked-off lanes point outside
# their tensor, e.g. the statistics kernel's neighbour loads: its tests are left out as Triton-only)
"$PY" -m pytest -q -p no:cacheprovider --durations=10 tests \
  -k "not ((test_conformance or test_statistics_make_no_host_sync) and triton)" \
  --ignore=tests/backends/test_triton_sigreg_fused.py --ignore=tests/backends/test_triton_sigreg_passes.py \
  --ignore=tests/backends/test_triton_sort_match.py --ignore=tests/backends/test_triton_sort_stat.py \
  --ignore=tests/backends/test_triton_moment_stat.py --ignore=tests/backends/test_triton_visreg_terms.py \
  --ignore=tests/backends/test_triton_order_nll.py \
  --ignore=tests/tools/test_compile_check.py

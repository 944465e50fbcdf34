#!/usr/bin/env bash
# Validate and time the package on a CUDA GPU with the Python and torch already installed there
# (no network): `make gpu`, or `bash scripts/gpu.sh [OUT_DIR]`.
#
#   PY=python3            the interpreter whose torch/triton are used (default python3)
#   OUT_DIR               logs, junit.xml, results-cuda.tar.gz (default benchmarks/out/gpu)
#   GPU_STEPS="build tests sanitizer check bench"   the steps to run (default all, in this order)
#   TEST_WORKERS=8, BENCH_LIMIT=540                 pytest-xdist workers (0: one process); seconds the sweep may take
#   FUSED_SIGREG_COMMIT=<hash>                      the commit to stamp results with where the tree
#                                                   was copied without its git history
#
# Each step runs under a time limit (together well inside 30 minutes on one H100) and prints one
# verdict line; the benchmark step writes benchmarks/results/cuda/ and the GPU blocks of README.md and docs/results.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT_DIR=$(mkdir -p "${1:-${OUT_DIR:-benchmarks/out/gpu}}" && cd "${1:-${OUT_DIR:-benchmarks/out/gpu}}" && pwd)
STEPS=" ${GPU_STEPS:-build tests sanitizer check bench} "
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the kernels run compiled on the GPU

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "no CUDA GPU: $PY's torch sees no CUDA device (or does not import); nothing was run" >&2
  exit 2
fi

VERDICTS=()
FAILED=0
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT_DIR/NAME.log, one verdict line
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc summary
  timeout --kill-after=15 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  summary=$(grep -E "[0-9]+ (passed|failed)|ERROR SUMMARY|RACECHECK SUMMARY|FAIL|wrote " "$OUT_DIR/$name.log" | tail -1)
  case $rc in
    0) VERDICTS+=("PASS     $name ($((SECONDS - t0)) s) $summary") ;;
    124|137) VERDICTS+=("TIMEOUT  $name (limit $limit s) $summary"); FAILED=1 ;;
    *) VERDICTS+=("FAIL     $name (rc $rc, $((SECONDS - t0)) s) $summary"); FAILED=1 ;;
  esac
  echo "${VERDICTS[-1]}"
  return $rc
}
wants() { [[ $STEPS == *" $1 "* ]]; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
  "$PY" -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)'
  "$PY" -c 'import triton; print("triton", triton.__version__)' 2>/dev/null || echo "triton not installed"
  if [ -n "${FUSED_SIGREG_COMMIT:-}" ]; then echo "commit $FUSED_SIGREG_COMMIT (given by FUSED_SIGREG_COMMIT)"
  else echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo +dirty)"; fi
} | tee "$OUT_DIR/env.txt"

if wants build; then
  # In place against this Python's torch: an editable install without dependencies or an index.
  CAP=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
  step build 600 env FUSED_SIGREG_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$CAP}" \
      MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . \
    || { printf '%s\n' "${VERDICTS[@]}"; exit 1; }
fi

if wants tests; then
  PARALLEL=()
  if [ "${TEST_WORKERS:-8}" != 0 ] && "$PY" -c 'import xdist' 2>/dev/null; then PARALLEL=(-n "${TEST_WORKERS:-8}"); fi
  step tests 540 "$PY" -m pytest tests -q -rfEs -p no:cacheprovider "${PARALLEL[@]}" --junitxml="$OUT_DIR/junit.xml"
fi

if wants sanitizer; then
  if command -v compute-sanitizer >/dev/null; then
    # every backend's kernels, forward and backward: Triton (N <= 4096), CUB's block and segmented sorts
    for tool in memcheck racecheck; do
      step "sanitizer_$tool" 300 bash -c "compute-sanitizer --tool $tool --error-exitcode 9 $PY -m fused_sigreg check --device cuda \
        && compute-sanitizer --tool $tool --error-exitcode 9 $PY -m fused_sigreg check --device cuda --op swd,rdmreg --N 5000 --D 16 --K 8 --V 1"
    done
  else
    VERDICTS+=("SKIPPED  sanitizer: compute-sanitizer is not on PATH"); echo "${VERDICTS[-1]}"
  fi
fi

if wants check; then
  step check_float32 180 "$PY" -m fused_sigreg check --device cuda --dtype float32
  step check_tf32 180 "$PY" -m fused_sigreg check --device cuda --dtype float32 --tf32
  step check_bfloat16 180 "$PY" -m fused_sigreg check --device cuda --dtype bfloat16
  step check_float16 180 "$PY" -m fused_sigreg check --device cuda --dtype float16
  step check_wide_sorts 180 "$PY" -m fused_sigreg check --device cuda --op swd,visreg,rdmreg --N 9000 --D 33 --K 40
fi

if wants bench; then
  step bench "${BENCH_LIMIT:-540}" "$PY" benchmarks/run.py --device cuda
  tar czf "$OUT_DIR/results-cuda.tar.gz" benchmarks/results/cuda README.md docs/results.md 2>/dev/null
fi

echo
echo "make gpu: $(head -1 "$OUT_DIR/env.txt"); logs in $OUT_DIR"
printf '%s\n' "${VERDICTS[@]}"
exit $FAILED

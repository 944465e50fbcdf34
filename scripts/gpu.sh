#!/usr/bin/env bash
# Validate and time the package on a CUDA GPU with the Python and torch already installed there
# (no network): `make gpu`, or `bash scripts/gpu.sh [OUT_DIR]`.
#
#   PY=python3            the interpreter whose torch/triton are used (default python3)
#   OUT_DIR               logs, junit.xml, results-cuda.tar.gz (default benchmarks/out/gpu)
#   GPU_STEPS="build headline tests sanitizer check bench"   the steps to run (default all), in this order:
#                         build, headline, check float32 and bfloat16, tests, sanitizer, the other checks, bench;
#                         headline is `python -m fused_sigreg headline`: SIGReg head to head (ours, fully
#                         fused, eager, torch.compile) at the base and LeJEPA training points, first
#   GPU_BUILD=prebuilt    the build step installs the package without compiling and checks that the
#                         extension already in fused_sigreg/ loads with its CUDA kernels (one built
#                         elsewhere for this Python and torch: `make gpu-prebuild`)
#   GPU_BUDGET=S          seconds all steps together may take (default: no budget, each step its own
#                         limit). A step starts only if what is left covers it and the later steps'
#                         minimums; the suite and the sweep take what is left and list what they had no
#                         time for (skipped tests, "not measured" cases, each with the reason)
#   BUNDLE=FILE.tar.gz    after every step, one archive of everything the run wrote (for remote runs
#                         that copy back only a few files); `tar xzf FILE.tar.gz` at the checkout's
#                         root puts the logs in benchmarks/out/<OUT_DIR's name>/ and, when the bench
#                         step ran, the results and README/docs GPU blocks in place
#   TEST_WORKERS=N        pytest-xdist workers (default: the CPU count; 0: one process)
#   TEST_LIMIT=S, BENCH_LIMIT=S   seconds the suite / the sweep may take at most (default 540 each)
#   TEST_TIMEOUT_EACH=S   seconds one test may take (default 120; FUSED_SIGREG_TEST_TIMEOUT): a hung or
#                         slow test fails with the reason instead of eating the lease. The suite on the
#                         GPU leaves out tests/tools (CPU-only tooling, run by CI on both stacks)
#   FUSED_SIGREG_COMMIT=<hash>   the commit to stamp results with where the tree was copied without
#                                its git history
#
# Each step prints one verdict line. Exit status: 0 all ran and passed, 1 a step failed or timed out,
# 2 no GPU, 3 all that ran passed but the budget left steps out. The bench step writes
# benchmarks/results/cuda/ and the GPU blocks of README.md and docs/results.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT_DIR=$(mkdir -p "${1:-${OUT_DIR:-benchmarks/out/gpu}}" && cd "${1:-${OUT_DIR:-benchmarks/out/gpu}}" && pwd)
STEPS=" ${GPU_STEPS:-build headline tests sanitizer check bench} "
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the kernels run compiled on the GPU

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "no CUDA GPU: $PY's torch sees no CUDA device (or does not import); nothing was run" >&2
  exit 2
fi
if [ -n "${GPU_BUDGET:-}" ] && ! [[ $GPU_BUDGET =~ ^[0-9]+$ ]]; then
  echo "GPU_BUDGET must be a whole number of seconds, got '$GPU_BUDGET'" >&2
  exit 2
fi
if [ -n "${BUNDLE:-}" ]; then
  BUNDLE=$(mkdir -p "$(dirname "$BUNDLE")" && cd "$(dirname "$BUNDLE")" && pwd)/$(basename "$BUNDLE")
fi

# The golden data sit in ../shared/ beside a checkout; a tree copied to a GPU machine can carry them in
# benchmarks/out/golden/ (ignored by git) instead.
if [ -z "${FUSED_SIGREG_GOLDEN:-}" ] && [ ! -e ../shared/golden/reference_cases.pt ] \
  && [ -e benchmarks/out/golden/reference_cases.pt ]; then
  export FUSED_SIGREG_GOLDEN=$PWD/benchmarks/out/golden/reference_cases.pt
fi

wants() { [[ $STEPS == *" $1 "* ]]; }
HAVE_SANITIZER=$(command -v compute-sanitizer >/dev/null && echo 1 || echo 0)
# float32 and bfloat16 are checked right after the headline, before the suite; the rest after the sanitizer
FIRST_CHECKS="float32 bfloat16"
LATER_CHECKS="tf32 float16 wide_sorts"

# The steps this run will attempt, in order, each with the least time worth starting it with. Build and
# sanitizers: their times in the last H100 run (77, 29, 51 s), rounded up with room for the kernels
# added since; the checks' 30 s is an estimate (that run did not time them); the suite and the sweep
# can be cut short, so theirs is just a floor.
PLAN=()
declare -A MINIMUM=([build]=90 [headline]=60 [tests]=120 [sanitizer_memcheck]=60 [sanitizer_racecheck]=90 [bench]=120)
wants build && PLAN+=(build)
wants headline && PLAN+=(headline)
if wants check; then for d in $FIRST_CHECKS; do PLAN+=("check_$d"); MINIMUM[check_$d]=30; done; fi
wants tests && PLAN+=(tests)
if wants sanitizer && [ "$HAVE_SANITIZER" = 1 ]; then PLAN+=(sanitizer_memcheck sanitizer_racecheck); fi
if wants check; then for d in $LATER_CHECKS; do PLAN+=("check_$d"); MINIMUM[check_$d]=30; done; fi
wants bench && PLAN+=(bench)

START=$SECONDS
VERDICTS=()
FAILED=0
LEFT_OUT=0
LIMIT=0

bundle() {  # the logs so far and, with the bench step, the files the sweep writes, in one archive whose
  # paths are the checkout's (logs under benchmarks/out/<OUT_DIR's name>/, ignored by git)
  [ -n "${BUNDLE:-}" ] || return 0
  local tmp="$BUNDLE.partial" results=()
  local opts=(--exclude='*.tar.gz' --exclude='*.partial' --transform="s,^\.,benchmarks/out/$(basename "$OUT_DIR"),")
  wants bench && results=(benchmarks/results/cuda README.md docs/results.md)
  tar czf "$tmp" "${opts[@]}" -C "$OUT_DIR" . -C "$PWD" "${results[@]}" 2>/dev/null \
    || tar czf "$tmp" "${opts[@]}" -C "$OUT_DIR" . 2>/dev/null
  mv -f "$tmp" "$BUNDLE"
}

fits() {  # fits NAME LIMIT: sets LIMIT to what step NAME may take; false (and a verdict) when too little is left
  local name=$1 reserve=0 later=0 s left
  LIMIT=$2
  [ -n "${GPU_BUDGET:-}" ] || return 0
  for s in "${PLAN[@]}"; do
    if [ "$later" = 1 ]; then reserve=$((reserve + MINIMUM[$s])); fi
    [ "$s" = "$name" ] && later=1
  done
  left=$((GPU_BUDGET - (SECONDS - START) - reserve))
  ((left < LIMIT)) && LIMIT=$((left > 0 ? left : 0))
  if ((LIMIT < MINIMUM[$name])); then
    VERDICTS+=("SKIPPED  $name: GPU_BUDGET=$GPU_BUDGET s leaves $LIMIT s for it beside the later steps (it needs ${MINIMUM[$name]} s)")
    echo "${VERDICTS[-1]}"
    LEFT_OUT=1
    return 1
  fi
}

step() {  # step NAME COMMAND...: run under LIMIT seconds, log to OUT_DIR/NAME.log, one verdict line
  local name=$1 t0=$SECONDS rc summary
  shift
  timeout --kill-after=15 "$LIMIT" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  summary=$(grep -E "[0-9]+ (passed|failed|skipped)|ERROR SUMMARY|RACECHECK SUMMARY|FAIL|wrote |not measured|^headline:" "$OUT_DIR/$name.log" | tail -1)
  case $rc in
    0) VERDICTS+=("PASS     $name ($((SECONDS - t0)) s) $summary") ;;
    124|137) VERDICTS+=("TIMEOUT  $name (limit $LIMIT s) $summary"); FAILED=1 ;;
    *) VERDICTS+=("FAIL     $name (rc $rc, $((SECONDS - t0)) s) $summary"); FAILED=1 ;;
  esac
  echo "${VERDICTS[-1]}"
  bundle
  return $rc
}

check_step() {  # check_step DTYPE: every backend against eager at that dtype (wide_sorts: N past one tile)
  local args
  case $1 in
    float32) args=(--dtype float32) ;;
    tf32) args=(--dtype float32 --tf32) ;;
    bfloat16) args=(--dtype bfloat16) ;;
    float16) args=(--dtype float16) ;;
    wide_sorts) args=(--op sliced_wasserstein,visreg,rdmreg --N 9000 --D 33 --K 40) ;;
  esac
  fits "check_$1" 180 && step "check_$1" "$PY" -m fused_sigreg check --device cuda "${args[@]}"
}

finish() {
  echo
  echo "make gpu: $(head -1 "$OUT_DIR/env.txt"); logs in $OUT_DIR${BUNDLE:+, all in $BUNDLE}"
  printf '%s\n' "${VERDICTS[@]}" | tee "$OUT_DIR/verdicts.txt"
  bundle
  if [ "$FAILED" = 1 ]; then exit 1; fi
  if [ "$LEFT_OUT" = 1 ]; then exit 3; fi
  exit 0
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
  "$PY" -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)'
  "$PY" -c 'import triton; print("triton", triton.__version__)' 2>/dev/null || echo "triton not installed"
  if [ -n "${FUSED_SIGREG_COMMIT:-}" ]; then echo "commit $FUSED_SIGREG_COMMIT (given by FUSED_SIGREG_COMMIT)"
  else echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$([ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo +dirty)"; fi
  golden=${FUSED_SIGREG_GOLDEN:-../shared/golden/reference_cases.pt}
  echo "steps:${STEPS% }; budget ${GPU_BUDGET:-none}; build ${GPU_BUILD:-in place};" \
    "golden data $([ -e "$golden" ] && echo "$golden" || echo "not found (the golden tests skip)")"
} | tee "$OUT_DIR/env.txt"

if wants build && fits build 600; then
  if [ "${GPU_BUILD:-}" = prebuilt ]; then
    # The package installed without compiling; the extension in fused_sigreg/ must load with CUDA kernels.
    step build bash -c "FUSED_SIGREG_BUILD_EXT=0 '$PY' -m pip install --no-deps --no-build-isolation --no-index -e . \
      && '$PY' -c 'from fused_sigreg.backends.extension import library as l; import sys; ok = l.available()[0] and l.has_kernel(\"sort_match\", \"CUDA\"); print(\"prebuilt extension with CUDA kernels:\", ok, l.available()[1]); sys.exit(0 if ok else 1)'" \
      || finish
  else
    # In place against this Python's torch: an editable install without dependencies or an index.
    CAP=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
    step build env FUSED_SIGREG_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$CAP}" \
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . \
      || finish
  fi
fi

if wants headline && fits headline 240; then
  # the question a lease answers first: where our SIGReg stands against eager and torch.compile
  step headline "$PY" -m fused_sigreg headline --device cuda
fi

if wants check; then for d in $FIRST_CHECKS; do check_step "$d"; done; fi

if wants tests && fits tests "${TEST_LIMIT:-540}"; then
  PARALLEL=()
  WORKERS=${TEST_WORKERS:-$(nproc)}
  if [ "$WORKERS" != 0 ] && "$PY" -c 'import xdist' 2>/dev/null; then PARALLEL=(-n "$WORKERS"); fi
  # the lean path (sync debug mode, CUDA-graph replay) and the kernels' own tests first, so that a
  # suite cut short by the budget has run those
  DEADLINE=()
  [ -n "${GPU_BUDGET:-}" ] && DEADLINE=(FUSED_SIGREG_TEST_DEADLINE=$(($(date +%s) + LIMIT - 60)))
  step tests env "${DEADLINE[@]}" FUSED_SIGREG_TEST_TIMEOUT="${TEST_TIMEOUT_EACH:-120}" \
    "$PY" -m pytest -q -rfEs -p no:cacheprovider --durations=20 "${PARALLEL[@]}" --ignore=tests/tools \
    --junitxml="$OUT_DIR/junit.xml" tests/test_lean_path.py tests/test_conformance.py tests/backends tests/test_usage_modes.py tests/test_dispatch.py tests/test_shapes.py tests
fi

if wants sanitizer; then
  if [ "$HAVE_SANITIZER" = 1 ]; then
    # every backend's kernels, forward and backward: Triton (N <= 4096; SIGReg's P path and fully fused
    # kernel), CUB's block and segmented sorts; then SIGReg with D and K multiples of 16 and enough rows
    # for the large tiles on a 132-SM GPU (the 16-byte-load variants)
    for tool in memcheck racecheck; do
      CS="compute-sanitizer --tool $tool --error-exitcode 9 $PY -m fused_sigreg check --device cuda"
      fits "sanitizer_$tool" 300 && step "sanitizer_$tool" bash -c "$CS \
        && $CS --op sliced_wasserstein,rdmreg --N 5000 --D 16 --K 8 --V 1 && $CS --op sigreg --N 4500 --D 64 --K 160 --V 2"
    done
  else
    VERDICTS+=("SKIPPED  sanitizer: compute-sanitizer is not on PATH"); echo "${VERDICTS[-1]}"
  fi
fi

if wants check; then for d in $LATER_CHECKS; do check_step "$d"; done; fi

if wants bench && fits bench "${BENCH_LIMIT:-540}"; then
  # the sweep stops starting cases a minute before its limit, so that it still writes every table
  step bench "$PY" benchmarks/run.py --device cuda --time-limit $((LIMIT - 60))
  tar czf "$OUT_DIR/results-cuda.tar.gz" benchmarks/results/cuda README.md docs/results.md 2>/dev/null
fi

finish

# Two entry points (README quick start): `make bench` and `make test`.
# Both create .venv/ in the repo root on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
STAMP := $(VENV)/.fused_sigreg-installed

# The GPU machines' stack (Python 3.12, torch 2.11.0, triton 3.6.0), tested on CPU in its own venv.
GPU_STACK_VENV := .venv-gpu-stack
GPU_STACK_PY := $(GPU_STACK_VENV)/bin/python
GPU_STACK_SPEC ?= torch==2.11.0 triton==3.6.0
# (a pyenv shim named python3.12 exists even where it cannot run, so the candidate must answer)
PYTHON312 ?= $(firstword $(foreach p,$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12),\
	$(if $(shell $(p) -c 'import sys; print(sys.version_info[:2] == (3, 12))' 2>/dev/null | grep True),$(p))))
GPU_STACK_STAMP := $(GPU_STACK_VENV)/.fused_sigreg-installed

.PHONY: install lint format test test-gpu-stack compile-check compile-check-gpu-stack asan bench benchmarks results gpu gpu-prebuild clean

# The editable install compiles csrc/ into fused_sigreg/_C (CPU always, CUDA when nvcc is found).
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" numpy
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Style (settings in pyproject.toml): `make lint` checks, `make format` rewrites.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The test suite (what CI runs): style first, then pytest; the 25 slowest tests close the log.
PYTEST_ARGS ?= --durations=25
test: lint
	$(PY) -m pytest tests $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: a run without tests proves nothing" >&2; fi; \
	exit $$status

# The suite on the GPU machines' stack. Its extension is built CPU-only (the CUDA sources are built
# by `make install` above and on the GPU by `make gpu`), which keeps CI inside its time.
$(GPU_STACK_STAMP): pyproject.toml setup.py $(wildcard csrc/*)
	test -n "$(PYTHON312)" || { echo "no python3.12 found (set PYTHON312=...)" >&2; exit 1; }
	test -x $(GPU_STACK_PY) || $(PYTHON312) -m venv $(GPU_STACK_VENV)
	$(GPU_STACK_PY) -m pip install --quiet --disable-pip-version-check $(GPU_STACK_SPEC) numpy setuptools wheel
	FUSED_SIGREG_BUILD_CUDA=0 MAX_JOBS=$${MAX_JOBS:-2} $(GPU_STACK_PY) -m pip install --quiet --disable-pip-version-check \
		--no-build-isolation -e ".[dev]"
	touch $(GPU_STACK_STAMP)

test-gpu-stack: $(GPU_STACK_STAMP)
	FUSED_SIGREG_BUILD_CUDA=0 $(GPU_STACK_PY) -m pytest tests $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: a run without tests proves nothing" >&2; fi; \
	exit $$status

# Every Triton configuration the launchers can pick, compiled for sm_80 and sm_90 by the real compiler
# (no GPU needed), and the CUDA extension by nvcc: 0 spills, shared memory within limits, and every
# launchable configuration present. Its own CI step on both stacks (Triton 3.8 and 3.6), outside pytest.
compile-check: install
	env -u TRITON_INTERPRET $(PY) -m fused_sigreg compile-check

compile-check-gpu-stack: $(GPU_STACK_STAMP)
	env -u TRITON_INTERPRET $(GPU_STACK_PY) -m fused_sigreg compile-check

# The extension's C++ under AddressSanitizer + UBSan: an instrumented copy in build/asan/ runs every
# test that does not need Triton (scripts/asan.sh; CI runs it after the two stacks).
asan: install
	PY=$(PY) bash scripts/asan.sh

# The main job: every usable backend checked against eager, then the N/K/D sweep on this device.
bench: install
	$(PY) -m fused_sigreg backends
	$(PY) -m fused_sigreg check
	TRITON_INTERPRET=1 $(PY) -m fused_sigreg check --op sigreg --N 150 --D 33 --K 40
	TRITON_INTERPRET=1 $(PY) -m fused_sigreg check --op sliced_wasserstein,visreg,rdmreg --N 129 --D 33 --K 8 --V 2
	$(PY) -m fused_sigreg memory
	$(PY) -m fused_sigreg bench --out benchmarks/out/bench.csv --out benchmarks/out/bench.json
	$(PY) -m fused_sigreg bench --op sigreg --N 8192 --D 512 --K 1024 --repeats 3 --out benchmarks/out/sigreg_memory.csv
	$(PY) -m fused_sigreg bench --op sliced_wasserstein,visreg,rdmreg --N 8192 --D 512 --K 512 --backend eager,cpu --out benchmarks/out/sort_ops_cpu.csv
	$(PY) -m fused_sigreg bench --op sigreg --N 8192 --D 512 --K 512 --backend eager,cpu --out benchmarks/out/sigreg_cpu.csv

# Sweeps of every op and provider -> benchmarks/results/<device>/ and the README results section.
results: install
	$(PY) benchmarks/run.py

# On a machine with a CUDA GPU and torch already installed (no network, no venv): build in place
# against that Python, run the suite, compute-sanitizer, check every dtype and the CUDA sweep
# (scripts/gpu.sh: GPU_STEPS, GPU_BUDGET, BUNDLE, ...). PY defaults to python3 here; OUT_DIR=... names the log folder.
gpu:
	PY=$(if $(filter command line environment,$(origin PY)),$(PY),python3) bash scripts/gpu.sh $(OUT_DIR)

# The extension for the GPU machines' stack (Python 3.12, torch 2.11.0+cu130) with its CUDA kernels
# (default sm_90), compiled here in place as fused_sigreg/_C.cpython-312-*.so, so that a GPU machine
# with that stack spends none of its time compiling: there, `GPU_BUILD=prebuilt make gpu`.
gpu-prebuild: $(GPU_STACK_STAMP)
	FUSED_SIGREG_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS=$${MAX_JOBS:-2} \
		$(GPU_STACK_PY) setup.py build_ext --inplace

# pytest-benchmark suite (kept out of `make test`).
benchmarks: install
	$(PY) -m pytest benchmarks --benchmark-only

clean:
	rm -rf $(VENV) $(GPU_STACK_VENV) build *.egg-info benchmarks/out

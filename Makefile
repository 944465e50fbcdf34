# Two entry points (README quick start): `make bench` and `make test`.
# Both create .venv/ in the repo root on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
STAMP := $(VENV)/.fused_sigreg-installed

.PHONY: install test bench check benchmarks results clean

# The editable install compiles csrc/ into fused_sigreg/_C (CPU always, CUDA when nvcc is found).
$(STAMP): pyproject.toml setup.py $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" numpy
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The test suite (what CI runs).
test: install
	$(PY) -m pytest tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: a run without tests proves nothing" >&2; fi; \
	exit $$status

# The main job: every usable backend checked against eager, then the N/K/D sweep on this device.
bench: install
	$(PY) -m fused_sigreg backends
	$(PY) -m fused_sigreg check
	TRITON_INTERPRET=1 $(PY) -m fused_sigreg check --op sigreg --N 150 --D 33 --K 40
	TRITON_INTERPRET=1 $(PY) -m fused_sigreg check --op swd,visreg,rdmreg --N 129 --D 33 --K 8 --V 2
	$(PY) -m fused_sigreg memory
	$(PY) -m fused_sigreg bench --out benchmarks/out/bench.csv --out benchmarks/out/bench.json
	$(PY) -m fused_sigreg bench --op sigreg --N 8192 --D 512 --K 1024 --repeats 3 --out benchmarks/out/sigreg_memory.csv
	$(PY) -m fused_sigreg bench --op swd,visreg,rdmreg --N 8192 --D 512 --K 512 --backend eager,cpu --out benchmarks/out/sort_ops_cpu.csv
	$(PY) -m fused_sigreg bench --op sigreg --N 8192 --D 512 --K 512 --backend eager,cpu --out benchmarks/out/sigreg_cpu.csv

# Sweeps of every op and provider -> benchmarks/results/<device>/ and the README results section.
results: install
	$(PY) benchmarks/run.py

# pytest-benchmark suite (kept out of `make test`).
benchmarks: install
	$(PY) -m pytest benchmarks --benchmark-only

clean:
	rm -rf $(VENV) build *.egg-info benchmarks/out

# `make train` and `make test` do everything on a fresh machine: create .venv, install, run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The tested PyTorch, pinned in the same pip command as everything else so no dependency can pull
# a newer (CUDA) torch; the CPU build itself comes from the machine's local wheel.
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): every test runs on one thread, so one worker per core; the suite
# takes ~2/3 of its one-process time on 2 cores. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= 2

.PHONY: train test test-fast smoke lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/lmlab train --config configs/default.yaml

smoke: $(STAMP)
	$(VENV)/bin/lmlab train --config configs/smoke.yaml

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

# The inner loop: everything but the tests marked slow (torchrun and crash-and-resume runs).
test-fast: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check lmlab tests bench

bench: $(STAMP)
	$(PY) bench/train_throughput.py
	$(PY) bench/generation.py

clean:
	rm -rf $(VENV) runs

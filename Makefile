# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the whole DVC pipeline on the built-in phantom cohort
#   make test   set up .venv and run the tests (pytest + nbval)
# Set-up is idempotent: it reinstalls only when pyproject.toml changed.
# Choose the PyTorch build with TORCH_INDEX (a wheel index URL), e.g. for a CUDA 12 driver (535):
#   make TORCH_INDEX=https://download.pytorch.org/whl/cu126 setup
# and the interpreter with PYTHON (3.11 or 3.12): make PYTHON=python3.12 test

SHELL := /bin/bash
PYTHON ?= python3.11
TORCH_INDEX ?=
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
KERNEL := plaque
export PATH := $(BIN):$(PATH)

.PHONY: setup demo pipeline readme test test-fast lint lab bench clean-venv

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11 (or 3.12)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $$($(BIN)/python scripts/pins.py torch torchvision)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (plaque)" >/dev/null
	@if [ -d .git ]; then $(BIN)/pre-commit install >/dev/null; fi
	touch $(STAMP)

setup: $(STAMP)

demo: pipeline
	dvc repro
	$(BIN)/python -m plaque.eval.readme

# dvc.yaml is written from params.yaml and the method registry (after changing profile, methods or priors)
pipeline: setup
	$(BIN)/python -m plaque.pipeline

# the README's results section, copied from the evaluate stage's reports/tables/summary.md
readme: setup
	$(BIN)/python -m plaque.eval.readme

test: setup lint
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval-lax --nbval-kernel-name $(KERNEL) -p no:cacheprovider notebooks

# the tests that take seconds (no nbval, no test marked slow): for the edit-test loop
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# root (as in most containers) needs --allow-root, which Jupyter refuses to guess
lab: setup
	$(BIN)/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	$(BIN)/python -m benchmarks.bench_data
	$(BIN)/python -m benchmarks.bench_stage1
	$(BIN)/python -m benchmarks

clean-venv:
	rm -rf $(VENV)

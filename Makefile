# Patron — the two set-up commands are `make demo` and `make test`; both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install lint format typecheck test test-fast demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## The whole suite: lint, types, then every test (real redis-server, real MLflow stores).
test: lint typecheck
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not reliability"

## End to end on embedded defaults: import shipped data, features, train, register, serve, show picks.
demo: install
	bash scripts/demo.sh

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf var reports/*.tmp .pytest_cache .mypy_cache .ruff_cache

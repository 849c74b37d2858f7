# Two entry points: `make demo` and `make test`. Both create or reuse the virtual environment
# $(VENV) and install what they need, torch first and pinned so pip never pulls a CUDA build.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# Override for a GPU machine, e.g. make test TORCH_SPEC="torch==2.13.0 --index-url ...".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# The reference library for benchmarks lives in its own environment (never a cellvi dependency);
# safetensors lets the diagnostics that need both libraries import cellvi from src/ there.
REFERENCE_VENV ?= .venv-scvi-tools
SCVI_TOOLS_SPEC ?= scvi-tools==1.4.2

BIN := $(VENV)/bin
STAMP := $(VENV)/.cellvi-installed

.PHONY: venv lint test demo bench-env benchmark-quality clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

# ruff keeps the tree clean: lint and format check, before the suite (so also in CI).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench-env: $(REFERENCE_VENV)/.installed

$(REFERENCE_VENV)/.installed:
	@test -x $(REFERENCE_VENV)/bin/python || $(PYTHON) -m venv $(REFERENCE_VENV)
	$(REFERENCE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(REFERENCE_VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(REFERENCE_VENV)/bin/python -m pip install --quiet $(SCVI_TOOLS_SPEC) safetensors
	@touch $@

benchmark-quality: $(STAMP) bench-env
	$(BIN)/python benchmarks/compare_scvi_tools.py --reference-python $(REFERENCE_VENV)/bin/python

clean:
	rm -rf $(VENV) demo_output .pytest_cache

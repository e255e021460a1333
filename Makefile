# medsae: two commands set everything up.
#   make demo   create .venv, install, run the full pipeline on the built-in demo data
#   make test   create .venv, install, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WS     ?= demo-workspace
# The CPU build of torch is installed first so that pip never resolves a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test venv lint typecheck bench clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install "$(TORCH_SPEC)" || $(BIN)/pip install --index-url https://download.pytorch.org/whl/cpu torch; \
	fi
	$(BIN)/pip install -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/medsae demo --workspace $(WS)

browser-deps:
	@bash scripts/ensure-chromium.sh

test: venv browser-deps
	$(BIN)/python -m pytest -n 2 --timeout 600 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(WS) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# medsae: two commands set everything up.
#   make demo   create .venv, install, run the full pipeline on the built-in demo data
#   make test   create .venv, install, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WS     ?= demo-workspace
# torch is installed first, pinned, so that installing medsae never replaces it: the CPU
# build (from TORCH_CPU_INDEX, else the configured index; one retry, so that an unreachable
# TORCH_CPU_INDEX costs seconds) on a machine without a GPU, the CUDA build (PyPI's Linux
# wheel, or the wheel of TORCH_CUDA_INDEX when set, e.g. https://download.pytorch.org/whl/cu128)
# where nvidia-smi runs.
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CUDA_INDEX ?=

.PHONY: demo test venv lint typecheck bench clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found (nvidia-smi): installing the CUDA build of $(TORCH_SPEC)"; \
		$(BIN)/pip install "$(TORCH_SPEC)" $(if $(TORCH_CUDA_INDEX),--index-url $(TORCH_CUDA_INDEX)) && \
		$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch has no CUDA: set TORCH_CUDA_INDEX')"; \
	else \
		$(BIN)/pip install --retries 1 --timeout 15 --index-url $(TORCH_CPU_INDEX) "$(TORCH_SPEC)" || $(BIN)/pip install "$(TORCH_SPEC)"; \
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

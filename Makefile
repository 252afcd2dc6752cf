# eo-contrast developer tasks. Every target sets up .venv itself on first use.
#   make demo   - build the sample scene, load it from STAC, pair S1/S2, write to local Zarr (offline)
#   make test   - lint, type-check, then the test suite (docs build and notebooks included)
#
# PyTorch: where no NVIDIA GPU is visible, the CPU build is installed (TORCH_SPEC, default
# torch==2.13.0). Point pip at PyTorch's CPU wheel index if your pip would otherwise fetch a CUDA
# build, e.g. `make demo PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_GPU_SPEC ?= torch>=2.2,<3
PIP_EXTRA ?=
EXTRAS ?= dev
DEMO_OUT ?= demo-output

.PHONY: setup demo test lint typecheck pytest docs clean constraints default-weights

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q $(PIP_EXTRA) "$(TORCH_GPU_SPEC)"; \
	else \
	  $(BIN)/python -m pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/eo-contrast demo --out $(DEMO_OUT) --overwrite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest

test: lint typecheck pytest

docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Re-pin the development environment after changing dependencies in pyproject.toml.
constraints: setup
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^torch=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# Retrain the packaged default weights (a few CPU minutes) and redraw the loss figure.
default-weights: setup
	$(BIN)/python -m eo_contrast.pipelines.default_weights --out eo_contrast/weights/default.safetensors --figure docs/img/pretraining-loss.png

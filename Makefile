# Two entry points (see README): `make run` and `make test`. Both set everything up first.
VENV    ?= .venv
PYTHON  ?= python3
# On CPU-only machines this pin takes PyTorch's CPU build; the package itself asks for torch>=2.3.
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.simkit-installed

.PHONY: setup run test lint bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[jax,torch,sweep,plot,tensorboard,numba,zarr,zarr-test,test,dev]"
	touch $(STAMP)

run: setup
	$(BIN)/simkit run scenarios/heat2d.yaml --overwrite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	SIMKIT_REQUIRE_BACKENDS=$${CI:+1} $(BIN)/python -m pytest -n 2 --durations=15

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run.py

# The documentation site, built into site/ (git-ignored); --strict: a broken link, a missing
# page or an unresolved API reference fails the build.
docs: setup
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict --clean --site-dir site

clean:
	rm -rf $(VENV) runs site

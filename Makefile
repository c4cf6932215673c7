# Two commands do it all on a fresh machine (see README.md):
#   MONUSEG_DIR=/path/to/monuseg make pipeline   set up, then `dvc repro` the pipeline
#   make test                                    set up, then run every test
#   make stack / make stack-down                 a local PostgreSQL + S3 + MLflow server (README, "Beyond one machine")
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the stages find the venv's python either way (pipelines/python.sh); first on PATH, it also wins over
# another environment that happens to be activated
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup pipeline test stack stack-down

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	touch $@

pipeline: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

stack: setup
	$(BIN)/patchunet stack up

stack-down: setup
	$(BIN)/patchunet stack down

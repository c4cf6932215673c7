# Two commands do it all on a fresh machine (see README.md):
#   MONUSEG_DIR=/path/to/monuseg make pipeline   set up, then `dvc repro` the pipeline
#   make test                                    set up, then lint, build the docs and run every test
#   make stack / make stack-down                 a local PostgreSQL + S3 + MLflow server (docs/how-to/team-stack.md)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the stages find the venv's python either way (pipelines/python.sh); first on PATH, it also wins over
# another environment that happens to be activated
export PATH := $(abspath $(BIN)):$(PATH)
# the docs site into the gitignored site/ (mkdocs.yml); --strict fails on any broken link, anchor or
# page. The variable silences Material's notice of its end of life (May 2027), printed at every build.
DOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

.PHONY: setup pipeline test docs stack stack-down

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
	$(DOCS_BUILD)
	$(BIN)/python -m pytest

docs: setup
	$(DOCS_BUILD)

stack: setup
	$(BIN)/patchunet stack up

stack-down: setup
	$(BIN)/patchunet stack down

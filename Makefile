# Two commands: `make run` (install with the teacher model, then run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-teacher bench ui

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

install-teacher: $(BIN)/python
	$(BIN)/pip install -q -e '.[teacher,test]'

run: install-teacher
	$(BIN)/dsc run

test: install
	$(BIN)/python -m pytest

bench: install-teacher
	$(BIN)/python bench/generation.py --json bench/results/generation.json
	$(BIN)/python bench/training.py --json bench/results/training.json
	$(BIN)/python bench/incremental.py --json bench/results/incremental.json

ui: install
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dsc/dagster} $(BIN)/dagster dev -h 127.0.0.1 -p 3000

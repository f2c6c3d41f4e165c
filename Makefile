# Two commands: `make run` (install with the teacher model, then run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-teacher llama llama-rebuild doctor bench ui

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama.cpp is compiled once per (version, CPU flags) into .dsc/wheels/ with explicit instruction sets (never
# AMX, never -march=native) and installed from there, before pip could build or reuse a native wheel.
llama: $(BIN)/python
	$(BIN)/python -m resources.llama_build

llama-rebuild: $(BIN)/python
	$(BIN)/python -m resources.llama_build --rebuild

install: llama
	$(BIN)/pip install -q -e '.[test]'

install-teacher: llama
	$(BIN)/pip install -q -e '.[teacher,test]'

doctor: install
	$(BIN)/dsc doctor

run: install-teacher
	$(BIN)/dsc run

test: install
	$(BIN)/dsc doctor --profile test
	$(BIN)/python -m pytest

bench: install-teacher
	$(BIN)/python bench/generation.py --json bench/results/generation.json
	$(BIN)/python bench/training.py --json bench/results/training.json
	$(BIN)/python bench/incremental.py --json bench/results/incremental.json

ui: install
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dsc/dagster} $(BIN)/dagster dev -h 127.0.0.1 -p 3000

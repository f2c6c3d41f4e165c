# Two commands: `make run` (install with the teacher model, then run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast install install-teacher llama llama-rebuild doctor browser bench ui

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

# The UI test drives a real browser: Debian's chromium (Playwright cannot download its own here). Without root or
# apt, the test is skipped locally and fails under CI (CI=1), so CI can never pass without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "make: chromium is not installed (apt-get install -y chromium as root); the UI test will be skipped"

test: install browser
	$(BIN)/dsc doctor --profile test
	$(BIN)/python -m pytest

# The fast layer, for iteration (about a minute): unit tests, the checks on hand-written tables, the staleness
# table, and the data chain replayed from a recording of the real model (dsc_assets_tests/recorded.py). CI runs
# `make test`, which includes these and the real-model layer.
test-fast: install
	$(BIN)/python -m pytest -m fast

bench: install-teacher
	$(BIN)/python bench/generation.py --json bench/results/generation.json
	$(BIN)/python bench/training.py --json bench/results/training.json
	$(BIN)/python bench/incremental.py --json bench/results/incremental.json

# The instance config (one-run queue, telemetry off) is written first, so the queue holds from the first run.
# `dsc doctor` first (remembered after one pass): a llama.cpp build that would crash on this CPU stops here with
# the fix, not inside a UI run whose worker dies without a log.
ui: install-teacher
	$(BIN)/dsc doctor
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dsc/dagster} $(BIN)/python -c "from dsc_assets.cli.common import prepare_environment as p; p(None)"
	DAGSTER_HOME=$${DAGSTER_HOME:-$(CURDIR)/.dsc/dagster} $(BIN)/dagster dev -h 127.0.0.1 -p 3000

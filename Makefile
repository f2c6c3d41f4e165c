# Two commands: `make run` (install with the teacher model, then run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast install install-teacher lock lock-check llama llama-rebuild doctor browser postgres bench ui shared

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama.cpp is compiled once per (version, CPU flags) into .dsc/wheels/ with explicit instruction sets (never
# AMX, never -march=native) and installed from there, before pip could build or reuse a native wheel.
llama: $(BIN)/python
	$(BIN)/python -m resources.llama_build

llama-rebuild: $(BIN)/python
	$(BIN)/python -m resources.llama_build --rebuild

# Installs come from the hashed lock files (docs/install.md): every package pinned to one version and one set of
# file hashes, so two installs get the same bytes. llama-cpp-python is not in them (`make llama` installs a wheel
# built on this machine, whose hash no lock can know); dsc itself goes in last, editable and --no-deps, as hash
# mode cannot hash an editable. lock-check stops first, with the fix, when pyproject.toml changed after `make lock`.
# pip itself goes first, at the lock's version and hashes: pip 23.2 (what `python3 -m venv` brings here) rejects the
# lock in hash mode, as dagster-graphql asks for `gql[requests]` and only `gql` is pinned (fixed in pip 23.3).
LOCK := requirements/lock.txt
TEACHER_LOCK := requirements/teacher.lock
# $(call locked_pip,LOCKFILE): pip's entry (pin and hashes) cut out of the lock and installed on its own.
locked_pip = sed -n '/^pip==/,/^    \#/p' $(1) > $(VENV)/pip.lock \
	&& $(BIN)/python -m pip install -q --require-hashes -r $(VENV)/pip.lock

lock-check: $(BIN)/python
	$(BIN)/python requirements/check_lock.py

install: lock-check llama
	$(call locked_pip,$(LOCK))
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .

install-teacher: lock-check llama
	$(call locked_pip,$(TEACHER_LOCK))
	$(BIN)/pip install -q --require-hashes -r $(TEACHER_LOCK)
	$(BIN)/pip install -q --no-deps -e .

# `make lock` regenerates both lock files from pyproject.toml (run it after editing the dependencies, commit the
# result) with pip-tools in a venv of its own, then stamps them for lock-check. It keeps the existing pins that
# still fit; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed, `LOCK_ARGS='-P duckdb'` one
# package. teacher.lock is the same set plus the teacher's 22 packages, constrained to lock.txt's pins.
PIP_TOOLS := pip==26.3 pip-tools==7.6.2
LOCK_VENV := .dsc/lock-venv
LOCK_ARGS ?=
PIP_COMPILE = $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --strip-extras --unsafe-package llama-cpp-python \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

lock:
	[ -x $(LOCK_VENV)/bin/python ] || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q $(PIP_TOOLS)
	$(PIP_COMPILE) --extra test -o $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra test --extra teacher -c $(LOCK) -o $(TEACHER_LOCK) pyproject.toml
	$(LOCK_VENV)/bin/python requirements/check_lock.py --stamp

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

# The shared-deployment tests start a real PostgreSQL server (initdb, pg_ctl): Debian's postgresql package. Without
# root or apt they are skipped locally and fail under CI (CI=1), as the UI test does without chromium.
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgres:
	@[ -n "$(PG_BIN)" ] || command -v initdb >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
		|| echo "make: PostgreSQL is not installed (apt-get install -y postgresql as root); its tests will be skipped"

# The shared deployment on this machine (docs/scale-out.md): PostgreSQL (cache, instance, warehouse), a Ray head and
# 2 workers, 2 llama.cpp servers of the 135M model; writes shared.yaml and .dsc/shared.env; Ctrl-C stops them all.
shared: install postgres
	$(BIN)/python -m resources.shared_deployment

# The whole suite, as CI runs it (.ci/run): ruff (lint, and the formatter's check: nothing it would change), the
# llama.cpp self-check, then every layer of the tests with the real 135M model.
test: install browser postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/dsc doctor --profile test
	$(BIN)/python -m pytest

# The fast layers, for iteration (a few minutes): unit/ (pure code, tiny real models, recorded answers) and graph/
# (assets, checks, the staleness table and the identity of the graph on recorded or tiny data). system/ is the rest.
test-fast: install
	$(BIN)/python -m pytest dsc_assets_tests/unit dsc_assets_tests/graph

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

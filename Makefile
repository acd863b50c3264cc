# hookfleet: `make run` starts the fleet, `make test` proves it. Both install what they need into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test lint format clean bytecode

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "hookfleet needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# PYTHONDONTWRITEBYTECODE is set on these machines, so no process caches what it compiles: each
# would compile everything it imports (measured: 4.3-5.2 s of CPU to import the fleet's modules,
# 2.1-2.4 s from bytecode). The venv's packages are compiled at install, ours here.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q webhooks_gateway workers tasks schemas tests

run: bytecode
	$(BIN)/hookfleet run

# Three pytest processes, a test file each (their fleets, databases and ports are their own): the
# integration tests mostly wait on processes, so three share the 2 cores. On one box, minutes apart:
# 316 s with three, 399 s with two (47 s of which set up the browser tests, with Chromium's install).
test: lint bytecode
	bash tests/support/ensure-services.sh
	$(BIN)/pytest -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .hookfleet .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench bench-smoke bench-jobs

# Benchmarks (tests/bench): not part of `make test`; wrk is installed when missing and we are root,
# else the Python load generator is used.
bench: bytecode
	command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk; } || echo "bench: no wrk, using the Python load generator"
	bash tests/support/ensure-services.sh
	$(BIN)/python -m tests.bench

bench-smoke: bytecode
	bash tests/support/ensure-services.sh
	$(BIN)/python -m tests.bench --smoke

# The scheduled jobs at 50,000 members / 10,000 RSVPs against the sandbox, limits raised 600x and
# projected back to the real ones (tests/bench/jobs.py); writes bench-jobs-results.json.
bench-jobs: bytecode
	bash tests/support/ensure-services.sh
	$(BIN)/python -m tests.bench.jobs

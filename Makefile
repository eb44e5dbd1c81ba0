# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e test-browser screenshots chromium demo lint \
        install clean bench test-faults reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium (browser downloads are blocked; never
# `playwright install`). Installed here when missing; fails loudly, never skips.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the console's browser tests"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@test -x $(CHROMIUM) || { echo "FAIL: $(CHROMIUM) is missing and could not be installed" >&2; \
	  exit 1; }

run: $(STAMP)
	$(BIN)/reserves serve

test: $(STAMP) chromium
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

test-e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

# Kill -9 of each role, broker and PostgreSQL restarts under a workload, then the checker
# (docs/reliability.md). FAULTS_SEED=n replays a run; `make reliability ARGS="--seed n"` too.
test-faults: $(STAMP)
	$(BIN)/pytest -q -s -m faults tests/faults

reliability: $(STAMP)
	$(BIN)/python -m tests.faults.reliability $(ARGS)

test-browser: $(STAMP) chromium
	$(BIN)/pytest -q tests/browser

# Refreshes the console screenshots committed under docs/console/ (the README shows them).
screenshots: $(STAMP) chromium
	CONSOLE_UPDATE_DOCS=1 $(BIN)/pytest -q tests/browser/test_console.py

# The benchmark harness (docs/performance.md): `make bench ARGS=--quick` for a short run.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

demo: $(STAMP)
	$(BIN)/python -m services.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .mypy_cache .ruff_cache *.egg-info

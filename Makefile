# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e test-faults reliability demo lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/reserves serve

test: $(STAMP)
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

demo: $(STAMP)
	$(BIN)/python -m services.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The README's two commands: `make demo` and `make test`. Both work on a fresh machine with
# Python >= 3.11 and make: they create .venv and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEVSTAMP = $(VENV)/.installed-dev
# Test workers (pytest-xdist): one per CPU, at most 4. TEST_WORKERS=0 runs the suite in one
# process (e.g. to read a test's output with -s).
TEST_WORKERS ?= auto

.PHONY: demo test lint typecheck bench soak clean tools

BIDS_VALIDATOR = .cache/npm/node_modules/.bin/bids-validator

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Settle needs Python >= 3.11 (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/settle demo $(ARGS)

test: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 $(PYTEST_ARGS)

lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEVSTAMP)
	$(BIN)/mypy

# Optional test tools from the npm registry (the BIDS export test skips without them locally;
# CI installs them through .ci/run).
tools: $(BIDS_VALIDATOR)

$(BIDS_VALIDATOR):
	@if command -v npm >/dev/null; then \
		mkdir -p .cache/npm && \
		npm install --silent --no-audit --no-fund --prefix .cache/npm bids-validator@1.15.0; \
	else echo "npm not found: the BIDS validator test will be skipped (fails under CI=true)"; fi

bench: $(DEVSTAMP)
	$(BIN)/python benchmarks/bench_processing.py
	$(BIN)/python benchmarks/bench_live.py
	$(BIN)/python benchmarks/bench_hub.py
	$(BIN)/python benchmarks/bench_scale.py --broker-nodelay
	$(BIN)/python benchmarks/bench_memory.py

# The soak (docs/reliability.md): 12 simulated hours, 50 straps, random faults, every count
# reconciled; about 70 min of wall time on 2 cores. Not part of `make test` (tests/test_soak.py
# is its 30 s version). ARGS="--hours 1 --straps 10" for a shorter one.
soak: $(DEVSTAMP)
	$(BIN)/python benchmarks/soak.py --json benchmarks/results/soak.json $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

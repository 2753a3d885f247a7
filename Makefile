# The two commands: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null)
export KOMBO_SYNC_HOME ?= $(CURDIR)/.local
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint typecheck unit audit up soak chaos lock bench clean

help:
	@echo "make demo   - set up, start the local Kombo sandbox and platform stand-in, run the DAGs, print a summary"
	@echo "make test   - set up and run linters, the type checker and the whole test suite"
	@echo "make up     - a local trial: Airflow's UI and components against the sandbox, until Ctrl-C"
	@echo "make soak   - the scheduled soak, long form (SOAK_MINUTES=20 of traffic and faults, then drain and check)"
	@echo "make chaos  - the chaos run, long form (CHAOS_MINUTES=20 on the compose deployment, >= 50 faults)"
	@echo "make bench  - run the benchmarks under bench/"
	@echo "make audit  - pip-audit over the pinned constraints.txt (needs a route to a vulnerability database)"
	@echo "make lock   - re-pin constraints.txt from the current environment"

venv: $(STAMP)

# uv when it is installed (seconds), pip otherwise (minutes); both install the same pinned set.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
ifdef UV
	$(UV) venv --allow-existing -p $(PYTHON) $(VENV)
	$(UV) pip install -p $(BIN)/python -r requirements-dev.txt -c constraints.txt
	$(UV) pip install -p $(BIN)/python --no-deps -e .
else
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
endif
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The audit runs last, so its verdict (including "NOT PERFORMED") is the last thing printed.
test: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)
	$(MAKE) --no-print-directory audit

# Fails on a known vulnerability with a fix; without a route to a vulnerability database it says loudly that it
# was NOT performed (a failure with KOMBO_AUDIT_REQUIRED=true). AUDIT_SERVICE=osv uses OSV instead of PyPI.
audit: venv
	$(BIN)/python -m tests.support.audit -r constraints.txt

unit: venv
	$(BIN)/python -m pytest -q tests/unit tests/dags

# Both work in $(KOMBO_SYNC_HOME) (default .local/): its state store, warehouse, mailbox and logs are reset each run.
demo: venv
	$(BIN)/python -m sandbox.demo --home "$(KOMBO_SYNC_HOME)"

# FINISH_AFTER=SECONDS: how long simulated candidates take (default 60); KOMBO_INTAKE_SCHEDULE and
# KOMBO_WRITEBACK_SCHEDULE: cron (default every minute in the trial).
up: venv
	$(BIN)/python -m sandbox.demo --up --home "$(KOMBO_SYNC_HOME)" $(if $(FINISH_AFTER),--finish-after $(FINISH_AFTER))

# The long form of the soak that `make test` runs for 5 minutes (tests/soak/); summary in .local/soak/summary.txt.
SOAK_MINUTES ?= 20
soak: venv
	$(BIN)/python -m tests.support.soak --minutes $(SOAK_MINUTES)

# The long form of the chaos run that `make test` runs for 2.5 minutes (tests/soak/test_chaos_run.py); its figures
# in .local/chaos/report.txt. CHAOS_SEED draws the faults' order and moments (docs/reliability.md, "Chaos run").
CHAOS_MINUTES ?= 20
CHAOS_SEED ?= 11
chaos: venv
	$(BIN)/python bench/chaos.py --minutes $(CHAOS_MINUTES) --seed $(CHAOS_SEED) --report .local/chaos/report.txt

bench: venv
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

lock: venv
ifdef UV
	$(UV) pip freeze -p $(BIN)/python | grep -v -e '^-e' -e 'kombo-assessment-sync' > constraints.tmp
else
	$(BIN)/pip freeze --exclude-editable | grep -v 'kombo-assessment-sync' > constraints.tmp
endif
	{ echo '# Exact versions tested together (Python 3.11, apache-airflow 3.3.2). Regenerate with `make lock`.'; cat constraints.tmp; } > constraints.txt
	rm constraints.tmp

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache .mypy_cache

# Every target sets up what it needs: on a fresh machine with Python 3.11+, `make run` and
# `make test` are the whole story.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: install run cluster test test-cluster test-slow bench bench-live bench-overload loadtest loadtest-ui schema docs check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "rekindle needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# make run DEV_CLOCK=1: with the dev clock (POST /v1/admin/clock moves it); ARGS passes other serve flags.
run: install
	$(BIN)/rekindle serve --config config/member_day.toml --host $(HOST) --port $(PORT) $(if $(filter-out 0,$(DEV_CLOCK)),--dev-clock) $(ARGS)

# A local three-primary Valkey Cluster (a replica each) in the foreground; prints its REDIS_URL.
cluster: install
	$(BIN)/rekindle cluster $(ARGS)

test: install
	$(BIN)/python -m pytest -q

# The store, operations and live-feed tests again, on a local cluster of their own.
test-cluster: install
	REKINDLE_TEST_CLUSTER=1 $(BIN)/python -m pytest -q tests/engine tests/realtime $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow
	REKINDLE_SCHEMATHESIS_EXAMPLES=300 $(BIN)/python -m pytest -q tests/realtime/test_schemathesis.py

bench: install
	$(BIN)/python -m loadtest.bench

bench-live: install
	$(BIN)/python -m loadtest.bench_live

# Admission control under a crowd of 1,024 connections, shedding off and on (a report).
bench-overload: install
	$(BIN)/python -m loadtest.overload $(ARGS)

# The member-day rehearsal (loadtest/memberday.toml): a service on its own embedded Valkey, a
# bounded headless Locust run with CSV/HTML reports in .data/loadtest/, then the verifier.
# ARGS passes flags: make loadtest ARGS="--users 60 --duration 300 --shape steady"
loadtest: install
	$(BIN)/python -m loadtest.locust.rehearse $(ARGS)

loadtest-ui: install
	$(BIN)/python -m loadtest.locust.rehearse --ui $(ARGS)

check: install
	$(BIN)/rekindle check config/*.toml

schema: install
	$(BIN)/rekindle schema > config/program.schema.json

# The programme reference and the OpenAPI document are generated from the code; tests hold the
# committed copies to it.
docs: install
	$(BIN)/python -m engine.reference > docs/programme.md
	$(BIN)/rekindle openapi --config config/member_day.toml > docs/openapi.json
	$(BIN)/python -m realtime.live_doc docs/live-feed.md

# Not .data: it holds the embedded server's AOF (every member's state) and the dev keys.
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

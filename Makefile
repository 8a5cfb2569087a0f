# Cakra — one command to run, one to test. Everything this project needs is
# installed from here (Python packages into .venv, Debian packages via
# scripts/install-system-deps), so a fresh machine needs nothing by hand.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/cakra
AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
TEST_REDIS_URL ?= redis://127.0.0.1:6379/7
PYTEST_ARGS ?=

.PHONY: run test lint test-sqlite test-postgres messages venv system-deps browser demo bench bench-embedded bench-faults clean

$(STAMP): pyproject.toml constraints.txt
	@py=$$(scripts/find-python) || exit 1; \
	  echo "make: using Python $$($$py -c 'import sys; print(sys.version.split()[0])') at $$py"; \
	  [ -x $(BIN)/python ] || $$py -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

system-deps:
	@scripts/install-system-deps

# Translations are compiled, not committed (.mo files are build output).
messages: $(STAMP) system-deps
	@$(BIN)/cakra compilemessages --verbosity 0 --ignore ".venv" --ignore "var" --ignore "build"

run: messages
	$(BIN)/cakra migrate --no-input --verbosity 0
	PORT=$(PORT) $(BIN)/cakra demo --quiet
	PORT=$(PORT) $(BIN)/cakra run --port $(PORT)

demo: messages
	$(BIN)/cakra migrate --no-input --verbosity 0
	$(BIN)/cakra demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cakra tests
	$(BIN)/lint-imports --no-cache

browser:
	@scripts/install-system-deps --with-browser

test-sqlite: messages browser
	@echo "== tests on SQLite + filesystem broker (embedded default) =="
	$(BIN)/pytest $(PYTEST_ARGS)

test-postgres: messages browser
	@scripts/services-up
	@echo "== tests on PostgreSQL + RabbitMQ (+ Redis for the shared rate-limit store) =="
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(AMQP_URL) CAKRA_TEST_REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

# The two halves share nothing (data dir, database, broker), so they run side
# by side on the machine's two cores; each half's output is printed whole when
# it finishes (--output-sync), and either failing fails the target. That
# already keeps both cores busy, so the halves do not split further with
# pytest-xdist on this machine class.
test: lint
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

# Benchmarks (docs/performance.md). Each uses a database of its own and
# removes it afterwards; the JSON line printed last is the result.
BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/cakra_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/15
BENCH_NOTICES ?= 100000
BENCH_EMBEDDED_NOTICES ?= 10000
BENCH_FAULT_NOTICES ?= 20000
# e.g. --faults-seed 2, or --no-faults-broker on a machine whose broker serves others.
BENCH_FAULT_OPTIONS ?=

BENCH_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/cakra_bench

# The bench gets a RabbitMQ virtual host of its own, so tests run meanwhile
# (which purge their queues) cannot touch its messages.
bench: messages
	@scripts/services-up
	@rabbitmqctl -q add_vhost cakra_bench 2>/dev/null || true
	@rabbitmqctl -q set_permissions -p cakra_bench guest ".*" ".*" ".*"
	CAKRA_DATA_DIR=var/bench DATABASE_URL=$(BENCH_PG_URL) CELERY_BROKER_URL=$(BENCH_AMQP_URL) REDIS_URL=$(BENCH_REDIS_URL) \
	  $(BIN)/cakra bench --notices $(BENCH_NOTICES) --create-database

# The pipeline under faults (cakra.ops.bench.faults): pool processes killed,
# RabbitMQ restarted once (rabbitmqctl stop_app/start_app: every vhost of this
# broker goes down for ~10 s), the bench database's connections terminated.
bench-faults: messages
	@scripts/services-up
	@rabbitmqctl -q add_vhost cakra_bench 2>/dev/null || true
	@rabbitmqctl -q set_permissions -p cakra_bench guest ".*" ".*" ".*"
	CAKRA_DATA_DIR=var/bench DATABASE_URL=$(BENCH_PG_URL) CELERY_BROKER_URL=$(BENCH_AMQP_URL) REDIS_URL=$(BENCH_REDIS_URL) \
	  $(BIN)/cakra bench --notices $(BENCH_FAULT_NOTICES) --create-database --faults $(BENCH_FAULT_OPTIONS)

bench-embedded: messages
	rm -rf var/bench-embedded
	CAKRA_DATA_DIR=var/bench-embedded $(BIN)/cakra bench --notices $(BENCH_EMBEDDED_NOTICES)

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache

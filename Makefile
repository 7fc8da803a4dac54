# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make serve   create .venv, install, migrate the SQLite database, print a
#                development admin token, serve on http://127.0.0.1:8000
#   make test    create .venv, install, run the whole test suite
# and, optionally, in front of the service:
#   make edge    the edge (docs/delivery.md) on http://127.0.0.1:8001
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
EDGE_PORT ?= 8001
PITCREW_UPSTREAM ?= http://127.0.0.1:$(PORT)
INSTANCE := instance
PYTEST_ARGS ?=

export FLASK_APP := service

.PHONY: serve edge test bench lint migrate fuzz clean

# `make serve` runs the worker (scheduled changes, guarded rollouts) beside
# gunicorn: service/serve.py starts both and stops both on Ctrl-C.
SERVE_WITH_WORKER = $(BIN)/python -m service.serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the declared dependencies change. Serving needs the
# SDK (the engine) and the service; tests add the test tools and the SDK's
# OpenFeature extra.
$(VENV)/.installed-serve: setup.cfg pyproject.toml sdk/pyproject.toml edge/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ./sdk -e ./edge -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-serve
	$(BIN)/pip install --quiet -e './sdk[openfeature]' -e ./edge -e '.[dev]'
	touch $@

migrate: $(VENV)/.installed-serve
	$(BIN)/flask db upgrade

serve: migrate
	@mkdir -p $(INSTANCE)
	@echo "Development admin token (also in $(INSTANCE)/dev-admin-token):"
	@$(BIN)/flask tokens dev --file $(INSTANCE)/dev-admin-token
	@rm -rf $(INSTANCE)/prometheus && mkdir -p $(INSTANCE)/prometheus
	PROMETHEUS_MULTIPROC_DIR=$(INSTANCE)/prometheus PORT=$(PORT) \
		$(SERVE_WITH_WORKER) $(BIN)/gunicorn -c python:service.gunicorn_conf 'service:create_app()'

# The edge: SDKs point at it exactly as at the service (docs/delivery.md).
edge: $(VENV)/.installed-serve
	EDGE_PORT=$(EDGE_PORT) PITCREW_UPSTREAM=$(PITCREW_UPSTREAM) $(BIN)/python -m pitcrew_edge

test: $(VENV)/.installed-test
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@command -v wrk >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -qq wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null))) || \
		echo "wrk not installed: HTTP benchmarks fall back to a Python load generator"
	$(BIN)/python benchmarks/run_all.py $(BENCH)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check sdk edge service tests benchmarks

# API fuzzing with schemathesis against a live server (CI runs this).
fuzz: $(VENV)/.installed-test
	$(BIN)/python tests/fuzz_api.py

clean:
	rm -rf $(VENV) $(INSTANCE) .pytest_cache .hypothesis

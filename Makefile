# Shipway developer commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml sdk/python/pyproject.toml
	$(BIN)/pip install --quiet -e ./sdk/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Install, migrate, seed the demo if the database is empty, start web + Celery worker + beat.
run: install
	PORT=$(PORT) BIN=$(BIN) ./scripts/run

## Install and run the whole test suite (Postgres/Redis when DATABASE_URL/CELERY_BROKER_URL are set).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

## Benchmarks (figures only; the ingest one needs the local Postgres). See docs/benchmarks.md.
bench: install
	$(BIN)/python tests/bench/config_poll.py
	$(BIN)/python tests/bench/ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache

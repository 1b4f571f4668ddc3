# Common commands, as executable documentation. Everything runs inside .venv.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install up test test-pg lint

$(BIN)/newsdesk:
	python3 -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'

install: $(BIN)/newsdesk

up: install
	$(BIN)/newsdesk up

test: install
	$(BIN)/pytest

test-pg: install
	NEWSDESK_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
	NEWSDESK_TEST_REDIS_URL=redis://127.0.0.1:6379/15 $(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint env screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)  ## two Daphne nodes sharing one Redis (embedded when REDIS_URL is unset)
	$(BIN)/python -m demo_chat.launcher

test: $(STAMP)  ## the whole suite, against a redis-server it starts itself
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the suite without the tests marked slow (faults, soaks, load)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

screenshots: $(STAMP)  ## refresh docs/images/ from the browser tests
	SAVE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/e2e/test_admin_browser.py tests/e2e/test_demo_browser.py

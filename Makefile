# Every target installs .venv first when it is missing, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run on CPU with 8 simulated devices, so sharding code paths are exercised everywhere.
TEST_ENV := JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=8" \
	TF_CPP_MIN_LOG_LEVEL=3 WANDB_MODE=disabled
PYTEST_WORKERS ?= 2

.PHONY: install test test-slow test-all lint bench clean help

help:
	@echo "make install     create .venv and install the project with its dev tools"
	@echo "make test        the default test suite (excludes tests marked slow)"
	@echo "make test-slow   only the slow tests;  make test-all: everything"
	@echo "make lint        ruff"
	@echo "make bench       step time of every sharpness-aware method (scripts/bench_methods.py)"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS)

# pytest exits 5 when no test carries the marker: that is not a failure here.
test-slow: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -m slow -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check looksam tests scripts reproduce results

bench: $(STAMP)
	$(PY) scripts/bench_methods.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

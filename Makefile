# Every target installs .venv first when it is missing, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run on CPU with 8 simulated devices, so sharding code paths are exercised everywhere.
TEST_ENV := JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=8" \
	TF_CPP_MIN_LOG_LEVEL=3 WANDB_MODE=disabled
PYTEST_WORKERS ?= 2

# Table reproduction (reproduce/tables/*.yaml is the registry): SCALE= a configs/scale/ name,
# SEEDS= (default: the paper's), LAUNCHER=basic|submitit_slurm|submitit_local|slurm,
# WANDB=online|offline|disabled, RUNS= (output root), OVERRIDES= (Hydra overrides for every
# cell, e.g. OVERRIDES="data.data_dir=../shared/data/tfds"), CELLS= (row/column ids: only
# those cells, e.g. CELLS="look_layersam/b4k").
SCALE ?= paper
SEEDS ?=
LAUNCHER ?= basic
WANDB ?=
RUNS ?= runs/reproduce
CELLS ?=
REPRODUCE = $(PY) -m reproduce run --scale $(SCALE) --launcher $(LAUNCHER) --runs $(RUNS) \
	$(if $(SEEDS),--seeds $(SEEDS)) $(if $(WANDB),--wandb $(WANDB)) $(foreach o,$(OVERRIDES),-o $(o)) \
	$(foreach c,$(CELLS),--cells=$(c))
TABLES = $(basename $(notdir $(wildcard reproduce/tables/*.yaml)))

.PHONY: install test test-slow test-all lint bench clean help list-tables reproduce-all report

help:
	@echo "make install     create .venv and install the project with its dev tools"
	@echo "make test        the default test suite (excludes tests marked slow)"
	@echo "make test-slow   only the slow tests;  make test-all: everything"
	@echo "make lint        ruff"
	@echo "make bench       step time of every sharpness-aware method (scripts/bench_methods.py)"
	@echo "make list-tables every table of both papers: cells, paper hardware and time, estimates"
	@echo "make reproduce-table1 .. -table7, reproduce-table-cifar10, reproduce-esam-table1 .. -table3,"
	@echo "     reproduce-figure1/2/4, reproduce-esam-figure1/3/4/5/6, reproduce-all  [SCALE= SEEDS= ...]"
	@echo "make report      one HTML page of every table and figure with its claims and figures:"
	@echo "     RUNS=<runs folder or evidence> SCALE=...  ->  <RUNS>/renders/index.html"

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
	$(TEST_ENV) $(PY) -m pytest -m slow -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check looksam tests scripts reproduce results

bench: $(STAMP)
	$(PY) scripts/bench_methods.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

list-tables: $(STAMP)
	$(PY) -m reproduce list

# RUNS=evidence SCALE=afternoon reports the committed evidence (evidence/renders/index.html).
report: $(STAMP)
	$(PY) -m results report --runs $(RUNS) --scale $(SCALE)

# LookSAM (CVPR) tables and figures, the ICLR submission's CIFAR-10 table, ESAM's.
reproduce-table-cifar10: $(STAMP)
	$(REPRODUCE) looksam_iclr_cifar10
reproduce-table%: $(STAMP)
	$(REPRODUCE) looksam_table$*
reproduce-figure%: $(STAMP)
	$(REPRODUCE) looksam_figure$*
reproduce-esam-table%: $(STAMP)
	$(REPRODUCE) esam_table$*
reproduce-esam-figure%: $(STAMP)
	$(REPRODUCE) esam_figure$*
reproduce-all: $(STAMP)
	status=0; for t in $(TABLES); do $(REPRODUCE) $$t || status=1; done; exit $$status

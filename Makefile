# Two front doors: `make demo` and `make test`. Both rest on an idempotent `make setup`.
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
PYTHON ?= python3
CORES  ?= 2
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test test-unit test-workflow test-slurm test-dvc params bench clean-demo

setup: $(VENV)/.installed

# Reinstall only when the lock file or the package metadata changes.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo: setup
	snakemake --configfile config/demo.yaml --cores $(CORES) all
	@cat results/demo/table.md

test: setup
	pytest

test-unit: setup
	pytest -m "not workflow and not slurm and not dvc"

test-workflow test-slurm test-dvc: test-%: setup
	pytest -m $*

params: setup
	vitpeft params --config config/config.yaml

bench: setup
	python benchmarks/throughput.py

clean-demo:
	rm -rf results/demo data/demo .resume/demo-*

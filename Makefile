# One entry point for the local workflow. `make help` lists the targets.

VENV         := .local/venv
PYTHON       := $(VENV)/bin/python
STACK        := tests/stack
NODE         := $(STACK)/node_modules/.bin/node
# The venv first on PATH: `cargo lambda` and moto come from there.
export PATH  := $(CURDIR)/$(VENV)/bin:$(PATH)
INPUT        ?= {}

.PHONY: help setup run test clean

help:
	@echo "make setup   install the local stack (Python venv, Node 22, interpreter, validator)"
	@echo "make run     run one execution of the state machine locally; INPUT='{\"mode\":\"full\"}' for a full sync"
	@echo "make test    validate the ASL, check format and lints, run the Rust tests and the end-to-end tests"

setup: $(VENV)/.installed $(STACK)/node_modules/.installed

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

$(STACK)/node_modules/.installed: $(STACK)/package.json $(STACK)/package-lock.json
	cd $(STACK) && npm ci --no-audit --no-fund --loglevel=error
	$(NODE) --version
	touch $@

run: setup
	$(PYTHON) $(STACK)/stack.py run --input '$(INPUT)'

test: setup
	$(NODE) $(STACK)/node_modules/.bin/asl-validator --json-path statemachine/agent.asl.json
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo test --workspace
	cd tests && ../$(PYTHON) -m pytest -q

clean:
	rm -rf .local $(STACK)/node_modules

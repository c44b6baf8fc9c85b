# Everything runs from a local venv that `make install` creates, so a fresh clone needs only python3.11.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint bench demo clean

$(BIN)/fetalbio: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/fetalbio

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check fetalbio tests tools

demo: install
	$(BIN)/fetalbio demo

bench: install
	$(BIN)/python -m fetalbio.bench

clean:
	rm -rf $(VENV) build *.egg-info

# Everything runs from a local venv that `make install` creates, so a fresh clone needs only python3.11.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-fast lint bench demo clean

$(BIN)/fetalbio: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/fetalbio

test: install
	$(BIN)/python -m pytest -q

# everything but the tests marked slow (training, model conversion): a quick check while editing
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check fetalbio tests tools examples

demo: install
	$(BIN)/fetalbio demo

bench: install
	$(BIN)/python -m fetalbio.bench
	$(BIN)/python -m fetalbio.benchproc

clean:
	rm -rf $(VENV) build *.egg-info

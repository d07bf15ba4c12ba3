PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check voxtral_mlx cli tests benchmarks training
	$(BIN)/ruff format --check voxtral_mlx cli tests benchmarks training

format: setup
	$(BIN)/ruff format voxtral_mlx cli tests benchmarks
	$(BIN)/ruff check --fix voxtral_mlx cli tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

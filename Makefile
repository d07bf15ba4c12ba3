PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

# Two workers (pytest-xdist), each taking whole test files: a file's fixtures (its servers,
# its models) are made once, in one worker; then the test marked `alone` (real-time audio
# through the sound server, which a busy machine disturbs), with nothing else running.
# `pytest tests/x.py` runs one file in one process.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not alone"
	$(BIN)/python -m pytest -m alone tests/test_trained.py

lint: setup
	$(BIN)/ruff check voxtral_mlx cli tests benchmarks training
	$(BIN)/ruff format --check voxtral_mlx cli tests benchmarks training

format: setup
	$(BIN)/ruff format voxtral_mlx cli tests benchmarks
	$(BIN)/ruff check --fix voxtral_mlx cli tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

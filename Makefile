PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

# MLX's Linux CPU wheel carries a reference BLAS, some 20 times slower than OpenBLAS at the
# tests' matrix sizes: where the system has OpenBLAS (.ci/run installs libopenblas0-pthread),
# the tests run with it loaded first, one thread a process (two workers on two cores).
OPENBLAS := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libopenblas.so.0 \
	/usr/lib/aarch64-linux-gnu/libopenblas.so.0 /usr/lib64/libopenblas.so.0))
FAST_BLAS := $(if $(and $(OPENBLAS),$(filter Linux,$(shell uname -s))),\
	LD_PRELOAD=$(OPENBLAS) OPENBLAS_NUM_THREADS=1)

# Two workers (pytest-xdist), each taking whole test files: a file's fixtures (its servers,
# its models) are made once, in one worker; then the test marked `alone` (real-time audio
# through the sound server, which a busy machine disturbs), with nothing else running.
# `pytest tests/x.py` runs one file in one process.
test: setup
	$(FAST_BLAS) $(BIN)/python -m pytest -n 2 --dist loadfile -m "not alone"
	$(FAST_BLAS) $(BIN)/python -m pytest -m alone tests/test_trained.py

lint: setup
	$(BIN)/ruff check voxtral_mlx cli tests benchmarks training
	$(BIN)/ruff format --check voxtral_mlx cli tests benchmarks training

format: setup
	$(BIN)/ruff format voxtral_mlx cli tests benchmarks
	$(BIN)/ruff check --fix voxtral_mlx cli tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

# Everything is installed from this project's own files into a virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: test demo lint clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,mpi]'
	touch $@

## test: run the whole suite on every fabric, MPI included (and the linter)
test: $(INSTALLED)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/python -m pytest

## demo: fit relaxation rates with Monte Carlo errors on every core (writes results/)
demo: $(INSTALLED)
	$(BIN)/python examples/relaxation.py --fabric multiprocessing --output results \
		--timeline results/timeline.json

lint: $(INSTALLED)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache

.PHONY: bench bench-quick

## bench: the benchmark suite against the peers (under 15 min): docs/benchmarks.md and .png
bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks

## bench-quick: the same, small and in one round (about a minute): results/benchmarks-quick.md
bench-quick: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks --quick

$(VENV)/.bench-installed: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# Everything is installed from this project's own files into a virtual environment. The
# package is built as a wheel and installed from it, as a user gets it, so that a file left
# out of the wheel fails the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := test,docs,demo,mpi

.PHONY: test demo docs dist install lint typecheck clean bench bench-quick

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip build
	touch $@

## dist: the sdist and the wheel (built from the sdist) in dist/
dist: $(VENV)/.created
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

## install: the wheel just built, with what the tests, the docs and the demo need
install: dist
	$(BIN)/python -m pip install --quiet "$$(ls dist/*.whl)[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps dist/*.whl

## test: lint and type-check, then the whole suite on every fabric, MPI and the docs included
test: install
	$(BIN)/ruff check src tests examples benchmarks docs
	$(BIN)/ruff format --check src tests examples benchmarks docs
	$(BIN)/mypy
	$(BIN)/python -m pytest

## docs: the documentation site in build/docs (a warning is an error)
docs: install
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs build/docs

## demo: fit relaxation rates with Monte Carlo errors on every core (writes results/)
demo: install
	$(BIN)/python examples/relaxation.py --fabric multiprocessing --output results \
		--timeline results/timeline.json

lint: install
	$(BIN)/ruff check src tests examples benchmarks docs
	$(BIN)/ruff format --check src tests examples benchmarks docs

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache

## bench: the benchmark suite against the peers (about 25 min on 2 cores): docs/benchmarks.md, .png
bench: install
	$(BIN)/python -m pip install --quiet "$$(ls dist/*.whl)[bench]"
	$(BIN)/python -m benchmarks

## bench-quick: the same, small and in one round (about a minute): results/benchmarks-quick.md
bench-quick: install
	$(BIN)/python -m pip install --quiet "$$(ls dist/*.whl)[bench]"
	$(BIN)/python -m benchmarks --quick

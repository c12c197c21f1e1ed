# `make repro`: set up the environment and run the pipeline. `make test`: set up and run the tests;
# `make test-fast`: only those that run no dvc, server, cluster, browser or database;
# `make setup-bench`: what bench/bench_breadth.py needs besides.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup setup-bench repro test test-fast lint format docs lock clean

setup: $(VENV)/.installed

# The lock file pins every dependency with hashes; uv (the lock's version, bootstrapped by pip)
# installs it in half pip's time, compiled to bytecode as pip would; the project goes in editable.
UV := $(BIN)/uv pip install --quiet --python $(BIN)/python
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep -m1 '^uv==' requirements.lock | cut -d' ' -f1)"
	$(UV) --compile-bytecode --require-hashes -r requirements.lock
	$(UV) --no-deps -e .
	touch $@

# The breadth benchmark (bench/bench_breadth.py): its data sets' package into the venv
# (requirements-bench.lock: the lock plus the `bench` extra), and FLAML in a venv of its own
# (bench/flaml.lock: FLAML pins an XGBoost older than the project's).
setup-bench: setup
	$(UV) --require-hashes -r requirements-bench.lock
	$(PYTHON) -m venv .venv-flaml
	.venv-flaml/bin/python -m pip install --quiet --require-hashes -r bench/flaml.lock

repro: setup
	dvc repro

test: setup
	python -m pytest

# The slow tiers are pytest markers (pyproject.toml; tests/conftest.py applies and checks them).
test-fast: setup
	python -m pytest -m "not (dvc or server or cluster or browser or postgres)"

lint: setup
	ruff check src tests bench
	ruff format --check src tests bench

format: setup
	ruff check --fix src tests bench
	ruff format src tests bench

# The docs site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or anchor.
docs: setup
	mkdocs build --strict --site-dir site

# Re-pin dependencies after editing pyproject.toml (needs network access to PyPI).
lock: setup
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes -o requirements.lock
	uv pip compile pyproject.toml --extra dev --extra bench --universal --python-version 3.11 \
		--generate-hashes -c requirements.lock -o requirements-bench.lock
	uv pip compile bench/flaml.in --universal --python-version 3.11 \
		--generate-hashes -o bench/flaml.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

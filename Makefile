# One command each for a fresh machine with only Python and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.demo: setup.cfg | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test: setup.cfg | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.demo
	$(BIN)/rrwatch demo

# scripts/install-test-deps installs the Debian packages the suites run, where it can (root,
# apt-get); where it cannot, it says which suites will be skipped.
test: $(VENV)/.test
	scripts/install-test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m mypy rrwatch
	$(BIN)/python -m ruff check rrwatch tests

# Benchmarks (bench/run.py, docs/performance.md): a real TLS etcd, 1,000 to 50,000 nodes.
bench: $(VENV)/.test
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(VENV)/.test
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

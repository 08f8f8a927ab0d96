# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Everything lands in .venv/ and .bin/ inside the checkout; Go builds are cached
# in the user's cache folder so a fresh clone on the same machine reuses them.

PYTHON ?= python3
# `make stack BRIDGES=2`: that many bridges behind the Collector's load_balancing exporter.
BRIDGES ?= 1
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test lint typecheck unit integration otel-bins stack bench bench-peers clean soak fuzz-deps

help:
	@echo "make demo       set up and run the example pipeline and attack (terminal timelines)"
	@echo "make test       set up, build the Collector and Jaeger, run every test tier"
	@echo "make stack      run the built Collector + Jaeger + the demo on this machine"
	@echo "                (BRIDGES=N: N bridges behind the Collector's load_balancing exporter)"
	@echo "make bench      print the benchmark table (the peers, Logfire and Langfuse, included)"
	@echo "make bench-peers  only ours beside Logfire and Langfuse (about a minute)"
	@echo "make soak       the long reliability runs only (outage soak, atheris); see RELIABILITY.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hackagent-otel demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not integration"

otel-bins:
	bash scripts/otel-bins.sh

integration: install otel-bins
	$(BIN)/pytest -m integration

# atheris (coverage-guided fuzzing) is no package dependency: only the soak-marked
# fuzz runs in tests/reliability/test_hostile.py use it.
fuzz-deps: install
	$(BIN)/python -m pip install --quiet 'atheris>=2.3'

# Every tier: static checks, unit tests, the reliability suite (the soak included: it
# takes about 2 minutes), then the integration tests against the real Collector and
# Jaeger (a missing binary fails the run under CI=true).
test: lint typecheck otel-bins fuzz-deps
	$(BIN)/pytest

# Only the long reliability runs: the 100,000-step outage soak and atheris; -s prints
# the figures RELIABILITY.md quotes.
soak: fuzz-deps
	$(BIN)/pytest -m soak -s

stack: install otel-bins
	$(BIN)/python scripts/stack.py --bridges $(BRIDGES)

# Every benchmark; the peers' (bench/peers.py) and hackagent 0.5.0's run in virtualenvs
# of their own, built once in the user's cache folder (PyPI needed the first time).
bench: install
	$(BIN)/python -m bench

bench-peers: install
	$(BIN)/python -m bench.peers

clean:
	rm -rf $(VENV) .bin .mypy_cache .ruff_cache .pytest_cache

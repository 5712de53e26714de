# luna-plugins developer entry points. Everything installs itself into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint typecheck unit bench clean cluster-tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: run the sidecar with the example plugins and a generator of monitoring points
demo: venv
	$(BIN)/python examples/demo.py

## test: lint, type-check and run every test
test: venv lint typecheck cluster-tools
	$(BIN)/python -m pytest -q -ra

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

## cluster-tools: build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm (needs Go)
cluster-tools: venv
	$(BIN)/luna-plugins cluster build

unit: venv
	$(BIN)/python -m pytest -q tests/unit

## bench: intake and route throughput against bare aiohttp (needs wrk)
bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .luna .mypy_cache .ruff_cache .pytest_cache

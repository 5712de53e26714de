# luna-plugins developer entry points. Everything installs itself into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv docs demo demo-node test test-compat test-kind lint typecheck unit bench bench-kube bench-scale clean cluster-tools system-deps e2e-kind kind-image

venv: $(STAMP)

# the product (luna-plugins, with its dev tools) and the local-cluster harness of the tests, the
# demo and the benchmarks (luna-plugins-cluster, tools/pyproject.toml: the `luna-cluster` command)
$(STAMP): pyproject.toml tools/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e tools/
	touch $(STAMP)

## docs: the documentation site from docs/ into site/ (strict: a broken link fails it; tests/docs
## builds it too, so `make test` does); `$(BIN)/mkdocs serve` shows it while you write
docs: venv
	$(BIN)/mkdocs build --strict

## demo: the whole product on a local control plane (cluster, CRDs, operator, sidecar + demo service, example LunaPlugins); Ctrl-C tears it down
demo: venv
	$(BIN)/python examples/demo.py

## demo-node: the same demo as real pods from the chart (demo.enabled=true) on a local node (needs root);
## Ctrl-C uninstalls it and stops the node
demo-node: venv system-deps
	$(BIN)/python examples/demo_node.py

## test: lint, type-check and run every test, each pod test once (scripts/test-suites.sh): the pod
## tests that need our own node (marked own_node) on it, kind's node image built or reused, then the
## other pod tests on a kind cluster in the background while the main suite runs; then the oldest
## supported Kubernetes minor (test-compat)
test: venv system-deps lint typecheck cluster-tools
	bash scripts/test-suites.sh
	$(MAKE) --no-print-directory test-compat

## test-kind: the pod suite on kind alone (e2e-kind; own_node tests skip there). Where kind cannot
## run (no Docker, no root for the local node image) it is skipped with the reason, unless
## LUNA_REQUIRE_NODE=1 (CI): then it fails
test-kind: venv cluster-tools
	KIND_OPTIONAL=$(if $(filter-out 0 false no,$(LUNA_REQUIRE_NODE)),0,1) bash scripts/e2e-kind.sh

## test-compat: the oldest Kubernetes minor the chart supports (kubeVersion >=1.30.0-0), tested.
## Builds kube-apiserver and kube-controller-manager $(COMPAT_KUBE) (tools/kube-$(COMPAT_KUBE)), then cached;
## cold on 2 cores 4 to 8 minutes (3m42s with an empty Go build cache on a quiet machine, 7m45s
## while other work shared the cores; about 6 CPU-minutes). Then runs the tests marked compat
## (install, apply, webhook, status, the CRD's CEL rules, the admission policies, every rendered
## object; 22 tests, about 50 s) against that control plane, with today's etcd, kubectl and helm.
## Part of `make test` (after the main suite): a cold CI run was 27.6 minutes before it, so with
## the build and these tests it stays near 35, under the 45 the compatibility promise allows
COMPAT_KUBE ?= 1.30
test-compat: venv
	$(BIN)/luna-cluster build --kube-version $(COMPAT_KUBE)
	LUNA_KUBE_VERSION=$(COMPAT_KUBE) $(BIN)/python -m pytest -q -ra -m compat tests/chart tests/operator

## system-deps: Debian tools the tests and benchmarks use: promtool (prometheus), wrk, zsh and fish
## (their completion of the CLI, tests/cli), and for the node and the image runc, catatonit,
## iptables, docker.io (dockerd) and debootstrap
system-deps:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v zsh >/dev/null 2>&1 || missing="$$missing zsh"; \
	command -v fish >/dev/null 2>&1 || missing="$$missing fish"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	command -v catatonit >/dev/null 2>&1 || missing="$$missing catatonit"; \
	command -v iptables >/dev/null 2>&1 || missing="$$missing iptables"; \
	command -v dockerd >/dev/null 2>&1 || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "please install:$$missing (tests that need them will be skipped)"; \
	  fi; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

## cluster-tools: build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm,
## Prometheus with Kubernetes service discovery, gopher-lua's glua (Argo CD's Lua) and, where a node can run (root), the node's
## kubelet, containerd, CNI plugins and CoreDNS (needs Go)
cluster-tools: venv
	$(BIN)/luna-cluster build --prometheus --lua $$(if [ "$$(id -u)" = 0 ]; then echo --node; fi)

## unit: the fast tests, no cluster and no sidecar process: the package suites (tests mirror the
## packages) without the tests marked kube (they need the local control plane) and without the
## sidecar's process tests (the files at the top of tests/sidecar, but for test_config.py)
UNIT_TESTS := tests/contract tests/sdk $(sort $(dir $(wildcard tests/sidecar/*/__init__.py))) \
	tests/sidecar/test_config.py tests/operator tests/cli tests/cluster
unit: venv
	$(BIN)/python -m pytest -q -m "not kube" $(UNIT_TESTS)

## bench: intake and route throughput against bare aiohttp (needs wrk)
bench: venv system-deps
	$(BIN)/python bench/run.py

## bench-kube: kubectl apply -> serving latency and the operator's figures, on a local control plane
bench-kube: venv cluster-tools
	$(BIN)/python bench/apply_to_serve.py
	$(BIN)/python bench/operator_bench.py

## bench-scale: the operator against 500 simulated sidecars (CPU, API requests, RSS, rollout latency),
## with the reports sidecars write and the full reports of before side by side; the curves in
## docs/performance.md: bench/operator_scale.py --pods 50,200,500,1000 --services 1,5 [--watches per-pod]
bench-scale: venv cluster-tools
	$(BIN)/python bench/operator_scale.py --reports compact,full

## e2e-kind: the pod suite (tests/node) on a kind cluster (`make test` runs it as test-kind). KIND_NODE=stock
## uses kind's node image (needs Docker and kind), KIND_NODE=local one built here without a registry
## (`luna-cluster kind-image`: needs root, go, debootstrap, docker.io), auto (default) picks;
## KIND_CLUSTER names the cluster, KEEP_CLUSTER=1 keeps it
e2e-kind: venv
	bash scripts/e2e-kind.sh

## kind-image: build (or reuse) kind and a kind node image without a registry (see e2e-kind)
kind-image: venv
	$(BIN)/luna-cluster kind-image

clean:
	rm -rf $(VENV) .luna .mypy_cache .ruff_cache .pytest_cache

#!/usr/bin/env bash
# make e2e-kind: the end-to-end suite against a kind cluster that runs the chart.
#
#   1. checks for docker (with a reachable daemon) and kind; exits 2 with a message otherwise
#   2. creates the kind cluster $KIND_CLUSTER (default luna-plugins-e2e), or reuses it
#   3. builds the image luna-plugins:e2e and loads it into the cluster's nodes
#   4. installs charts/luna-plugins into luna-system; its operator watches only luna-e2e-chart, so
#      it does not compete with the operators the suite starts in its own namespaces
#   5. smoke check: examples/lunaplugins/hello.yaml in luna-e2e-chart becomes Ready
#   6. runs pytest tests/e2e tests/operator with LUNA_TEST_KUBECONFIG (extra arguments go to pytest)
#   7. deletes the cluster, unless KEEP_CLUSTER=1
#
# The kubeconfig lives in a temporary directory: your own kubeconfig is never changed.
set -euo pipefail

KIND_VERSION=v0.33.0
CLUSTER="${KIND_CLUSTER:-luna-plugins-e2e}"
IMAGE=luna-plugins:e2e
RELEASE=luna
SYSTEM_NAMESPACE=luna-system
SMOKE_NAMESPACE=luna-e2e-chart
SMOKE_PLUGIN=hello

step() { printf 'e2e-kind: %s\n' "$*"; }

# Only bash builtins until docker and kind are found: the check must work with any PATH.
cannot_run() {
    printf "make e2e-kind needs %s; the default suite \`make test\` runs without one\n" "$1" >&2
    printf 'e2e-kind: it runs the end-to-end suite against a kind cluster, which needs Docker and kind\n' >&2
    exit 2
}

if ! command -v docker >/dev/null 2>&1; then
    cannot_run "a container engine: docker not found on PATH"
fi
if ! docker info >/dev/null 2>&1; then
    cannot_run "a container engine: docker is installed but \`docker info\` fails (is the Docker daemon running, may this user use it?)"
fi
if ! command -v kind >/dev/null 2>&1; then
    if command -v go >/dev/null 2>&1; then
        cannot_run "kind (Kubernetes in Docker): not found on PATH; install it with \`go install sigs.k8s.io/kind@${KIND_VERSION}\` (then put \$(go env GOPATH)/bin on PATH)"
    fi
    cannot_run "kind (Kubernetes in Docker): not found on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
    printf "e2e-kind: no Python virtual environment at %s: run \`make venv\` first\n" "$PYTHON" >&2
    exit 2
fi

# kubectl and helm: $LUNA_TEST_KUBECTL/$LUNA_TEST_HELM, else PATH, else the ones the project builds
client() {
    local name="$1" override="$2"
    if [[ -n "$override" ]]; then
        printf '%s\n' "$override"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        "$PYTHON" -m luna_cli.main cluster build >&2
        "$PYTHON" -c 'import sys; from luna_cluster import tools; print(tools.cached_binaries()[sys.argv[1]])' "$name"
    fi
}
step "client binaries"
KUBECTL="$(client kubectl "${LUNA_TEST_KUBECTL:-}")"
HELM="$(client helm "${LUNA_TEST_HELM:-}")"
step "  kubectl: $KUBECTL"
step "  helm:    $HELM"

WORKDIR="$(mktemp -d)"
export KUBECONFIG="$WORKDIR/kubeconfig"
cluster_in_use=""

cleanup() {
    local status=$?
    if [[ -n "$cluster_in_use" ]]; then
        if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
            step "keeping kind cluster $CLUSTER (KEEP_CLUSTER=1): kind get kubeconfig --name $CLUSTER > kubeconfig; delete it with kind delete cluster --name $CLUSTER"
        else
            step "deleting kind cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
            kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || true
        fi
    fi
    rm -rf "$WORKDIR"
    if [[ $status -eq 0 ]]; then
        step "passed"
    else
        step "failed (exit $status)"
    fi
    exit "$status"
}
trap cleanup EXIT

cluster_in_use=1
if kind get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
    step "reusing kind cluster $CLUSTER"
    kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
else
    step "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
fi
"$KUBECTL" cluster-info

step "building image $IMAGE"
DOCKER_BUILDKIT=1 docker build -t "$IMAGE" .

step "loading $IMAGE into the nodes of $CLUSTER"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "installing charts/luna-plugins as $RELEASE in $SYSTEM_NAMESPACE (operator watching $SMOKE_NAMESPACE)"
"$KUBECTL" create namespace "$SMOKE_NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$HELM" upgrade --install "$RELEASE" charts/luna-plugins \
    --namespace "$SYSTEM_NAMESPACE" --create-namespace \
    --set image.repository=luna-plugins \
    --set image.tag=e2e \
    --set image.pullPolicy=Never \
    --set "operator.namespaces={$SMOKE_NAMESPACE}" \
    --wait --timeout 5m

step "smoke check: LunaPlugin $SMOKE_PLUGIN in $SMOKE_NAMESPACE becomes Ready"
"$KUBECTL" apply -n "$SMOKE_NAMESPACE" -f "examples/lunaplugins/$SMOKE_PLUGIN.yaml"
if ! "$KUBECTL" wait -n "$SMOKE_NAMESPACE" --for=condition=Ready "lunaplugin/$SMOKE_PLUGIN" --timeout=120s; then
    "$KUBECTL" get -n "$SMOKE_NAMESPACE" lunaplugin "$SMOKE_PLUGIN" -o yaml || true
    "$KUBECTL" logs -n "$SYSTEM_NAMESPACE" -l app.kubernetes.io/component=operator --tail=100 || true
    exit 1
fi
"$KUBECTL" get -n "$SMOKE_NAMESPACE" lunaplugins
"$KUBECTL" delete -n "$SMOKE_NAMESPACE" lunaplugin "$SMOKE_PLUGIN" --timeout=60s

step "end-to-end suite: pytest tests/e2e tests/operator against $CLUSTER"
LUNA_TEST_KUBECONFIG="$KUBECONFIG" LUNA_TEST_KUBECTL="$KUBECTL" LUNA_TEST_HELM="$HELM" \
    "$PYTHON" -m pytest -q tests/e2e tests/operator "$@"

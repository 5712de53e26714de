#!/usr/bin/env bash
# make e2e-kind: the pod suite (tests/node) against a kind cluster instead of the local node.
#
#   1. checks for docker (with a reachable daemon) and kind; exits 2 with a message otherwise
#   2. creates the kind cluster $KIND_CLUSTER (default luna-plugins-e2e), or reuses it
#   3. builds the image luna-plugins:e2e with `luna-cluster image` (the same build as for
#      the local node), tags it luna-plugins:e2e-next too (for the upgrade test), and loads both
#      into the cluster's nodes
#   4. runs pytest tests/node with LUNA_TEST_KUBECONFIG and LUNA_TEST_IMAGE: the suite installs the
#      chart itself, as `make test` does on the local node (extra arguments go to pytest)
#   5. deletes the cluster, unless KEEP_CLUSTER=1
#
# The kubeconfig lives in a temporary directory: your own kubeconfig is never changed.
set -euo pipefail

KIND_VERSION=v0.33.0
CLUSTER="${KIND_CLUSTER:-luna-plugins-e2e}"
IMAGE=luna-plugins:e2e
NEXT_TAG=e2e-next

step() { printf 'e2e-kind: %s\n' "$*"; }

# Only bash builtins until docker and kind are found: the check must work with any PATH.
cannot_run() {
    printf "make e2e-kind needs %s; \`make test\` runs the same pod suite on a local node instead\n" "$1" >&2
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
        "$PYTHON" -m luna_cluster build >&2
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

step "building image $IMAGE (luna-cluster image)"
"$PYTHON" -m luna_cluster image --tag "$IMAGE" --state-dir "$WORKDIR/state"
docker tag "$IMAGE" "luna-plugins:$NEXT_TAG"

step "loading $IMAGE and luna-plugins:$NEXT_TAG into the nodes of $CLUSTER"
kind load docker-image "$IMAGE" "luna-plugins:$NEXT_TAG" --name "$CLUSTER"

step "pod suite: pytest tests/node against $CLUSTER"
LUNA_TEST_KUBECONFIG="$KUBECONFIG" LUNA_TEST_KUBECTL="$KUBECTL" LUNA_TEST_HELM="$HELM" \
    LUNA_TEST_IMAGE="$IMAGE" LUNA_TEST_IMAGE_NEXT_TAG="$NEXT_TAG" \
    "$PYTHON" -m pytest -q tests/node "$@"

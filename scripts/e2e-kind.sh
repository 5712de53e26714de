#!/usr/bin/env bash
# make e2e-kind: the pod suite (tests/node) against a kind cluster instead of the local node.
#
#   1. picks the node image (KIND_NODE): `stock` is kind's own (pulled from its registry: needs
#      docker with a reachable daemon and kind on PATH; exits 2 with a message otherwise); `local`
#      is built here without a registry by `luna-cluster kind-image` (kind too, from its Go module;
#      needs root, go, debootstrap and docker.io; a Docker daemon of its own is started when none
#      answers, and stopped at the end); `auto` (the default) is `local` where kind's registry
#      does not resolve and those tools are here, else `stock`
#   2. creates the kind cluster $KIND_CLUSTER (default luna-plugins-e2e), or reuses it
#   3. builds the image luna-plugins:e2e with `luna-cluster image` (the same build as for
#      the local node), tags it luna-plugins:e2e-next too (for the upgrade test), and loads both
#      into the cluster's nodes
#   4. runs pytest tests/node with LUNA_TEST_KUBECONFIG and LUNA_TEST_IMAGE: the suite installs the
#      chart itself, as `make test` does on the local node (extra arguments go to pytest)
#   5. deletes the cluster, unless KEEP_CLUSTER=1, also when a step fails or on Ctrl-C
#
# Where kind cannot run (no container engine, no kind, no root for the local image) it exits 2
# with the reason; with KIND_OPTIONAL=1 (`make test` outside CI) it says so and exits 0 instead.
# KIND_PREPARE_ONLY=1 stops after step 1 (kind and the node image built or found in the cache).
#
# The kubeconfig lives in a temporary directory: your own kubeconfig is never changed.
set -euo pipefail

KIND_VERSION=v0.33.0
CLUSTER="${KIND_CLUSTER:-luna-plugins-e2e}"
IMAGE=luna-plugins:e2e
NEXT_TAG=e2e-next
NODE="${KIND_NODE:-auto}"
#: the registry kind's stock node image comes from
STOCK_REGISTRY=registry-1.docker.io

step() { printf 'e2e-kind: %s\n' "$*"; }

case "$NODE" in
    stock | local) ;;
    auto)
        # local: kind's registry does not resolve, and this machine can build the node image
        NODE=stock
        if ! { command -v getent >/dev/null 2>&1 && getent hosts "$STOCK_REGISTRY" >/dev/null 2>&1; } &&
            [[ "$(id -u 2>/dev/null || echo 1)" == 0 ]] && command -v go >/dev/null 2>&1 &&
            command -v debootstrap >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
            NODE=local
        fi
        ;;
    *)
        printf 'e2e-kind: KIND_NODE=%s: use stock (kind'"'"'s own image), local (built here) or auto\n' "$NODE" >&2
        exit 2
        ;;
esac

# Only bash builtins until docker and kind are found: the check must work with any PATH.
cannot_run() {
    printf "make e2e-kind needs %s; \`LUNA_POD_SUITE=all pytest tests/node\` runs the whole pod suite on a local node instead\n" "$1" >&2
    printf 'e2e-kind: it runs the end-to-end suite against a kind cluster, which needs Docker and kind\n' >&2
    if [[ "${KIND_OPTIONAL:-0}" == 1 ]]; then
        printf 'e2e-kind: skipped: the pod tests not marked own_node did not run (KIND_OPTIONAL=1)\n' >&2
        exit 0
    fi
    exit 2
}

if ! command -v docker >/dev/null 2>&1; then
    cannot_run "a container engine: docker not found on PATH"
fi
KIND=kind
if [[ "$NODE" == stock ]]; then
    if ! docker info >/dev/null 2>&1; then
        cannot_run "a container engine: docker is installed but \`docker info\` fails (is the Docker daemon running, may this user use it?)"
    fi
    if ! command -v kind >/dev/null 2>&1; then
        if command -v go >/dev/null 2>&1; then
            cannot_run "kind (Kubernetes in Docker): not found on PATH; install it with \`go install sigs.k8s.io/kind@${KIND_VERSION}\` (then put \$(go env GOPATH)/bin on PATH)"
        fi
        cannot_run "kind (Kubernetes in Docker): not found on PATH (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    fi
fi
if [[ "$NODE" == local ]]; then
    step "node image: local (built here by luna-cluster kind-image; KIND_NODE=stock uses kind's own)"
else
    step "node image: stock (kind's own, from its registry; KIND_NODE=local builds one here)"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
    printf "e2e-kind: no Python virtual environment at %s: run \`make venv\` first\n" "$PYTHON" >&2
    exit 2
fi

# kubectl and helm: $LUNA_TEST_KUBECTL/$LUNA_TEST_HELM, else the versions the project pins when
# they are built (make cluster-tools), else PATH, else the project builds them
client() {
    local name="$1" override="$2" pinned=""
    if [[ -z "$override" ]]; then
        pinned="$("$PYTHON" -c 'import sys; from luna_cluster import tools; print((tools.cached_binaries() or {}).get(sys.argv[1], ""))' "$name" 2>/dev/null || true)"
    fi
    if [[ -n "$override" ]]; then
        printf '%s\n' "$override"
    elif [[ -n "$pinned" && -x "$pinned" ]]; then
        printf '%s\n' "$pinned"
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
#: where `luna-cluster kind-image` keeps the pid and log of the Docker daemon it may start
KIND_STATE="$ROOT/.luna/kind"
cluster_in_use=""
engine_started=""

cleanup() {
    local status=$?
    trap - INT TERM
    if [[ -n "$cluster_in_use" ]]; then
        if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
            step "keeping kind cluster $CLUSTER (KEEP_CLUSTER=1): $KIND get kubeconfig --name $CLUSTER > kubeconfig; delete it with $KIND delete cluster --name $CLUSTER${engine_started:+ (DOCKER_HOST=$DOCKER_HOST), then stop its Docker daemon with \`luna-cluster kind-stop --state-dir $KIND_STATE\`}"
        else
            step "deleting kind cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
            "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || true
        fi
    fi
    # the Docker daemon kind-image may have started (even if it failed later); none: nothing to do
    if [[ "$NODE" == local && "${KEEP_CLUSTER:-0}" != 1 ]]; then
        "$PYTHON" -m luna_cluster kind-stop --state-dir "$KIND_STATE" || true
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
# Ctrl-C or a TERM: leave through the EXIT trap, which deletes the cluster
trap 'exit 130' INT
trap 'exit 143' TERM

create_args=()
if [[ "$NODE" == local ]]; then
    step "building (or reusing) kind and the node image"
    "$PYTHON" -m luna_cluster kind-image --state-dir "$KIND_STATE" --kind-config "$WORKDIR/kind.yaml" >"$WORKDIR/kind.env"
    while IFS='=' read -r name value; do
        case "$name" in
            KIND) KIND="$value" ;;
            KIND_NODE_IMAGE) create_args=(--image "$value" --config "$WORKDIR/kind.yaml") ;;
            DOCKER_HOST)
                export DOCKER_HOST="$value"
                engine_started=1
                ;;
        esac
    done <"$WORKDIR/kind.env"
    step "  kind: $KIND"
    step "  ${create_args[*]}"
fi

if [[ "${KIND_PREPARE_ONLY:-0}" == 1 ]]; then
    step "kind and its node image are ready (KIND_PREPARE_ONLY=1: no cluster now)"
    exit 0
fi

cluster_in_use=1
if "$KIND" get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
    step "reusing kind cluster $CLUSTER"
    "$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
else
    step "creating kind cluster $CLUSTER"
    "$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s "${create_args[@]}"
fi
"$KUBECTL" cluster-info

step "building image $IMAGE (luna-cluster image)"
"$PYTHON" -m luna_cluster image --tag "$IMAGE" --state-dir "$WORKDIR/state"
docker tag "$IMAGE" "luna-plugins:$NEXT_TAG"

step "loading $IMAGE and luna-plugins:$NEXT_TAG into the nodes of $CLUSTER"
"$KIND" load docker-image "$IMAGE" "luna-plugins:$NEXT_TAG" --name "$CLUSTER"

step "pod suite: pytest tests/node against $CLUSTER"
LUNA_TEST_KUBECONFIG="$KUBECONFIG" LUNA_TEST_KUBECTL="$KUBECTL" LUNA_TEST_HELM="$HELM" \
    LUNA_TEST_IMAGE="$IMAGE" LUNA_TEST_IMAGE_NEXT_TAG="$NEXT_TAG" \
    "$PYTHON" -m pytest -q tests/node "$@"

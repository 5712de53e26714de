#!/usr/bin/env bash
# make test's suites (after lint and type checks), each pod test run once:
#
#   1. the pod tests that need our own node (marked own_node), on a node brought up for them:
#      first, on a kernel that no kind node has touched yet
#   2. kind and its node image, built or found in the cache (cold: a few minutes of Go builds and
#      debootstrap, run alone so that they do not slow the suites down)
#   3. the rest of the pod suite on a kind cluster (scripts/e2e-kind.sh) in the background, while
#   4. the main suite (everything but tests/node) runs: it waits on processes and API servers
#      about half of the time, which the kind run uses
#   5. the kind run's output (kept in .luna/test-kind.log) and the verdict of every part
#
# Where kind cannot run, steps 2 and 3 say why and are skipped, unless LUNA_REQUIRE_NODE=1 (CI):
# then they fail. Ctrl-C or TERM stops the kind run too (its script deletes the cluster).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
say() { printf 'make test: %s\n' "$*"; }

case "${LUNA_REQUIRE_NODE:-}" in
    "" | 0 | false | no) export KIND_OPTIONAL=1 ;;
    *) export KIND_OPTIONAL=0 ;;
esac

failed=()

say "1/4 the pod tests that need our own node (tests/node, marked own_node)"
LUNA_POD_SUITE=own-node "$PYTHON" -m pytest -q -ra tests/node || failed+=("the pod tests on our own node")

say "2/4 kind and its node image"
kind_log=.luna/test-kind.log
mkdir -p .luna
kind_pid=""
if KIND_PREPARE_ONLY=1 bash scripts/e2e-kind.sh; then
    say "3/4 the other pod tests on kind, in the background (log: $kind_log)"
    bash scripts/e2e-kind.sh >"$kind_log" 2>&1 &
    kind_pid=$!
else
    failed+=("kind's node image")
fi
stop_kind() {
    if [[ -n "$kind_pid" ]]; then
        kill -TERM "$kind_pid" 2>/dev/null
        wait "$kind_pid"
    fi
    exit 130
}
trap stop_kind INT TERM

say "4/4 the main suite (everything but tests/node)"
"$PYTHON" -m pytest -q -ra --durations=15 --ignore=tests/node || failed+=("the main suite")

if [[ -n "$kind_pid" ]]; then
    say "waiting for the pod tests on kind"
    wait "$kind_pid"
    kind_status=$?
    trap - INT TERM
    say "the pod tests on kind ($kind_log):"
    cat "$kind_log"
    [[ $kind_status -eq 0 ]] || failed+=("the pod tests on kind (exit $kind_status)")
fi

if ((${#failed[@]})); then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "every suite passed"

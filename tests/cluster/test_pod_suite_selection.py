"""Which pod tests run where (tests/node/conftest.py): ``LUNA_POD_SUITE=own-node`` keeps only the
tests marked ``own_node`` (``make test`` runs the others on kind), ``all`` keeps every one, and a
value it does not know stops pytest with a usage error instead of running a silent subset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def collect(suite: str, *, only: bool = True) -> subprocess.CompletedProcess[str]:
    """pytest on tests/node with ``LUNA_POD_SUITE=suite``: ``--collect-only``, or (``only=False``)
    a real run, which a usage error stops before any test (or node) starts."""
    env = {key: value for key, value in os.environ.items() if key != "LUNA_TEST_KUBECONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", *(["--collect-only"] if only else []), "-q", "-m", "", "tests/node"],
        cwd=ROOT,
        env={**env, "LUNA_POD_SUITE": suite},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def collected(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_own_node_keeps_exactly_the_marked_tests_and_all_keeps_every_one() -> None:
    everything = collect("all")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    own = collect("own-node")
    assert own.returncode == 0, own.stdout + own.stderr
    kept, every = collected(own), collected(everything)
    assert kept and set(kept) < set(every)
    assert f"{len(kept)}/{len(every)} tests collected ({len(every) - len(kept)} deselected)" in own.stdout
    # the node lifecycle module is marked as a whole, the demo test by itself: both stay
    assert any("test_node_lifecycle.py::" in name for name in kept), kept
    assert any("test_demo_node.py::" in name for name in kept), kept
    # a test every cluster can run goes to kind
    assert not any("test_an_annotated_deployment_gets_the_sidecar" in name for name in kept), kept


@pytest.mark.parametrize("suite", ["own_node", "kind", "ALL"])
def test_an_unknown_suite_is_a_usage_error_naming_the_choices(suite: str) -> None:
    result = collect(suite, only=False)
    assert result.returncode == 4, result.stdout + result.stderr
    assert f"LUNA_POD_SUITE={suite}: use one of all, own-node" in result.stdout + result.stderr
    assert "no tests ran" in result.stdout, result.stdout

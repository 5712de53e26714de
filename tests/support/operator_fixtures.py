"""Fixtures for tests that run the operator (the operator and end-to-end folders).

``crd`` installs the CRDs once per session; ``cluster`` binds kubectl helpers to the test's
namespace and, afterwards, clears any finalizer a test put on a LunaPlugin (the operator puts
none) so the namespace can go;
``operator_args`` (override per folder) are extra flags of the ``operator`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import CRD, Cluster, Operator, start_operator


@pytest.fixture(scope="session")
def crd(kube: Any) -> None:
    kube.kubectl("apply", "-f", str(CRD.parent))
    for name in ("lunaplugins.luna.dev", "lunapluginruntimes.luna.dev"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def cluster(kube: Any, namespace: str, crd: None) -> Iterator[Cluster]:
    yield Cluster(kube, namespace)
    # Whatever a test left behind must not hold the namespace's deletion on a finalizer.
    for item in Cluster(kube, namespace).items("lunaplugins"):
        if item["metadata"].get("finalizers"):
            kube.kubectl(
                "patch",
                "lunaplugin",
                item["metadata"]["name"],
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return ()


@pytest.fixture
def operator(
    kube: Any, namespace: str, cluster: Cluster, tmp_path: Path, operator_args: tuple[str, ...]
) -> Iterator[Operator]:
    """The operator for the test's namespace; plugins are deleted while it still runs."""
    running = start_operator(kube, namespace, tmp_path, *operator_args)
    yield running
    if running.process.poll() is None:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=60s", check=False)
        running.stop()

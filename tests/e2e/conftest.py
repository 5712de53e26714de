"""End-to-end: the real operator and sidecars on the local control plane, driven by kubectl."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator.conftest import crd  # noqa: F401  (the CRDs, installed once per session)
from tests.operator.harness import Cluster, Operator, start_operator
from tests.sidecar.harness import Sidecar, start_sidecar


@pytest.fixture
def cluster(kube: Any, namespace: str, crd: None) -> Iterator[Cluster]:  # noqa: F811
    yield Cluster(kube, namespace)
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
def operator(kube: Any, namespace: str, cluster: Cluster, tmp_path: Path) -> Iterator[Operator]:
    running = start_operator(kube, namespace, tmp_path, "--report-ttl", "6")
    yield running
    if running.process.poll() is None:
        kube.kubectl("delete", "lunaplugins", "--all", "-n", namespace, "--timeout=60s", check=False)
        running.stop()


@pytest.fixture
def cluster_sidecar(kube: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars in cluster mode for the test's namespace (service ``handlers``)."""
    started: list[Sidecar] = []

    def factory(pod: str, *args: str, wait_ready: bool = True) -> Sidecar:
        workdir = tmp_path / f"sidecar-{pod}-{len(started)}"
        workdir.mkdir()
        sidecar = start_sidecar(
            workdir,
            standalone=False,
            args=[
                "--namespace",
                namespace,
                "--service",
                "handlers",
                "--pod-name",
                pod,
                "--heartbeat-interval",
                "1",
                *args,
            ],
            env={"KUBECONFIG": str(kube.kubeconfig)},
            wait_ready=wait_ready,
        )
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.stop()

"""End-to-end: the real operator and sidecars on the local control plane, driven by kubectl."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import Sidecar, start_cluster_sidecar


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return ("--report-ttl", "6")  # a vanished sidecar stops counting within seconds


@pytest.fixture
def cluster_sidecar(kube: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars in cluster mode for the test's namespace (service ``handlers``)."""
    started: list[Sidecar] = []

    def factory(pod: str, *args: str, wait_ready: bool = True) -> Sidecar:
        workdir = tmp_path / f"sidecar-{pod}-{len(started)}"
        sidecar = start_cluster_sidecar(kube, namespace, workdir, pod, *args, wait_ready=wait_ready)
        started.append(sidecar)
        return sidecar

    yield factory
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.stop()

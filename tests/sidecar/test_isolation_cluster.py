"""``spec.isolation`` on a real sidecar process in cluster mode (real operator, real API server): a
LunaPlugin with ``isolation: process`` runs in a process of its own and its routes answer through
the sidecar; one without it runs in the sidecar's process; switching it back reloads the plugin
into the sidecar's process. Every wait is on a condition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import Sidecar, start_cluster_sidecar, wait_for


@pytest.fixture
def sidecar(kube: Any, namespace: str, tmp_path: Path) -> Iterator[Sidecar]:
    started = start_cluster_sidecar(kube, namespace, tmp_path / "sidecar", "pod-a")
    yield started
    if started.process.poll() is None:
        started.stop()


def running(sidecar: Sidecar, module: str, isolation: str) -> dict[str, Any] | None:
    plugin = sidecar.plugins().get(module) or {}
    ok = plugin.get("state") == "running" and plugin.get("isolation") == isolation
    return plugin if ok else None


@pytest.mark.kube
def test_a_plugin_with_isolation_process_runs_in_a_process_of_its_own(
    cluster: Cluster, operator: Any, sidecar: Sidecar
) -> None:
    ns = cluster.namespace
    cluster.apply(plugin_manifest("isolated", ns, route_code("/isolated", "far"), isolation="process"))
    cluster.apply(plugin_manifest("plain", ns, route_code("/plain", "near")))
    isolated = wait_for(lambda: running(sidecar, "isolated", "process"), timeout=30, what="isolated running")
    plain = wait_for(lambda: running(sidecar, "plain", "inProcess"), timeout=30, what="plain running")
    process = isolated["process"]
    assert process is not None and process["pid"] not in (None, sidecar.process.pid), isolated
    assert plain["process"] is None
    for path, answer in (("/isolated", "far"), ("/plain", "near")):
        reply = sidecar.get(path)
        assert (reply.status, reply.text) == (200, answer), (path, reply.status, reply.text)

    # back to the default: the same code is reloaded into the sidecar's process
    cluster.apply(plugin_manifest("isolated", ns, route_code("/isolated", "far"), isolation="inProcess"))
    moved = wait_for(
        lambda: running(sidecar, "isolated", "inProcess"), timeout=30, what="isolated in-process"
    )
    assert moved["process"] is None and moved["codeHash"] == isolated["codeHash"]
    assert sidecar.get("/isolated").text == "far"

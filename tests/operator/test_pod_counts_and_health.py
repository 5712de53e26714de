"""The pod counts of a LunaPlugin's status, and the Argo CD health check read against them.

The real operator writes the statuses; the sidecars' reports (LunaPluginRuntime) are written here
with kubectl, shaped as a sidecar writes them, so every rollout state is reached on purpose. The
health check (docs/argocd/lunaplugin-health.lua) runs in gopher-lua, Argo CD's interpreter,
against each object as the API server returns it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.operator.argocd_health import Health, health
from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import wait_for

pytestmark = pytest.mark.kube

NAME = "counted"
MODULE = "counted"


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def report(cluster: Cluster, pod: str, entry: dict[str, Any]) -> None:
    """Write ``pod``'s sidecar report of the handlers service, fresh, running ``entry`` for the plugin."""
    body = {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPluginRuntime",
        "metadata": {"name": f"{pod}-handlers", "namespace": cluster.namespace},
        "spec": {
            "service": "handlers",
            "pod": pod,
            "ready": True,
            "heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "plugins": [{"module": MODULE, **entry}],
            "problems": [],
        },
    }
    cluster.apply(json.dumps(body))


def counts(cluster: Cluster, expected: tuple[int, int, int]) -> dict[str, Any]:
    """Wait until the plugin's (podsReady, podsTotal, podsFailing) are ``expected``; the plugin."""

    def shown() -> tuple[Any, ...]:
        status = cluster.status(NAME)
        return (status.get("podsReady"), status.get("podsTotal"), status.get("podsFailing"))

    wait_for(lambda: shown() == expected, timeout=30, what=f"pod counts {expected} (now {shown()})")
    plugin = cluster.get("lunaplugin", NAME)
    assert plugin is not None
    return plugin


def test_pod_counts_follow_the_reports_and_argo_cd_reads_them(
    cluster: Cluster, operator: Any, tmp_path: Path
) -> None:
    ns = cluster.namespace
    code = route_code()
    created = cluster.kube.kubectl(
        "create", "-n", ns, "-o", "json", "-f", "-", input=plugin_manifest(NAME, ns, code)
    )
    assert health(json.loads(created.stdout), tmp_path).status == "Progressing"

    cluster.wait_phase(NAME, "Ready")
    plugin = counts(cluster, (0, 0, 0))
    assert plugin["status"]["loaded"] == "0/0"
    assert health(plugin, tmp_path) == Health("Healthy", "0/0 pods run the current code")

    # a rollout: one pod on the current code, one still on an older one
    report(cluster, "pod-a", {"state": "running", "codeHash": sha(code)})
    report(cluster, "pod-b", {"state": "running", "codeHash": sha("older")})
    plugin = counts(cluster, (1, 2, 0))
    assert plugin["status"]["loaded"] == "1/2"
    assert health(plugin, tmp_path) == Health("Progressing", "1/2 pods run the current code")
    printed = cluster.kube.kubectl("get", "lp", NAME, "-n", ns, "-o", "wide").stdout
    assert "LOADED" in printed and "FAILING" in printed

    report(cluster, "pod-b", {"state": "running", "codeHash": sha(code)})
    plugin = counts(cluster, (2, 2, 0))
    assert health(plugin, tmp_path) == Health("Healthy", "2/2 pods run the current code")

    # a pod could not load the current code and keeps the older one
    failed = {"codeHash": sha("older"), "failedCodeHash": sha(code), "error": "ImportError: no redis"}
    report(cluster, "pod-b", {"state": "running", **failed})
    plugin = counts(cluster, (1, 2, 1))
    found = health(plugin, tmp_path)
    assert found.status == "Degraded" and "ImportError: no redis" in found.message

    # a new generation: Progressing until the operator has seen it, then Degraded when invalid
    report(cluster, "pod-b", {"state": "running", "codeHash": sha(code)})
    counts(cluster, (2, 2, 0))
    applied = cluster.apply(plugin_manifest(NAME, ns, code + "\ndef broken(:\n"), "-o", "json")
    assert health(json.loads(applied.stdout), tmp_path) == Health(
        "Progressing", "waiting for the operator to validate generation 2"
    )
    invalid = cluster.wait_phase(NAME, "Invalid")
    plugin = cluster.get("lunaplugin", NAME)
    assert plugin is not None and invalid["podsReady"] == 2  # the last good version keeps serving
    assert health(plugin, tmp_path) == Health("Degraded", invalid["message"])

    cluster.apply(plugin_manifest(NAME, ns, code, enabled=False))
    cluster.wait_phase(NAME, "Disabled")
    plugin = cluster.get("lunaplugin", NAME)
    assert plugin is not None and health(plugin, tmp_path).status == "Suspended"

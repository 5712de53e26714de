"""A name the operator must write, held by an object it did not write (issue: hardening): the
operator says so (status, metric) and recovers once the object is removed, against the real
API server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import http, wait_for

pytestmark = pytest.mark.kube

OFFERED = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "creds", "labels": {"luna.dev/plugin-settings": "true"}},
    "stringData": {"token": "s3cret"},
}
#: named like the service's settings Secret, without the operator's label
SQUATTER = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "luna-plugins-handlers-settings"},
    "stringData": {"mine": "not the operator's"},
}


def blocked(operator: Any, namespace: str) -> float:
    text = http("GET", operator.metrics_url).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("luna_operator_blocked_names{") and f'luna_namespace="{namespace}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_squatted_settings_secret_is_reported_and_recovered_from(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    cluster.apply(json.dumps(OFFERED))
    cluster.apply(json.dumps(SQUATTER))
    settings_from = [{"setting": "token", "secretKeyRef": {"name": "creds", "key": "token"}}]
    cluster.apply(plugin_manifest("kettle", ns, route_code("/kettle", "k"), settingsFrom=settings_from))
    wait_for(
        lambda: "did not write: delete or rename it" in cluster.status("kettle").get("message", ""),
        timeout=60,
        what="the plugin to say what blocks it",
    )
    assert cluster.status("kettle")["phase"] == "Pending"
    wait_for(lambda: blocked(operator, ns) == 1, what="luna_operator_blocked_names at 1")

    cluster.kube.kubectl("delete", "secret", "luna-plugins-handlers-settings", "-n", ns)
    cluster.wait_phase("kettle", "Ready", timeout=120)
    written = cluster.get("secret", "luna-plugins-handlers-settings")
    assert written is not None and written["metadata"]["labels"].get("luna.dev/role") == "settings"
    wait_for(lambda: blocked(operator, ns) == 0, what="luna_operator_blocked_names back at 0")

"""Pods that asked for the sidecar and run without it, found on the real API server by the
operator's scan with the chart's own ClusterRole and a real token (issue: platform fit)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from luna_operator.cluster_api import KubeClusterApi
from luna_operator.events import EventRecorder
from luna_operator.injection_audit import InjectionAudit
from luna_operator.metrics import OperatorMetrics
from tests.support.accounts import service_account_kube
from tests.support.chart import of_kind, render

pytestmark = pytest.mark.kube

SIDECAR = "luna-sidecar"
ASKS = {"luna.dev/inject": "true"}


def make_pod(
    kube: Any,
    namespace: str,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("app",),
    finalizers: list[str] | None = None,
) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels or {},
            "annotations": annotations or {},
            "finalizers": finalizers or [],
        },
        "spec": {"containers": [{"name": c, "image": "app:1"} for c in containers]},
    }
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def operator_role_as(kube: Any, name: str) -> None:
    """The chart's operator ClusterRole (default values), applied under ``name``."""
    (role,) = [r for r in of_kind(render(kube), "ClusterRole") if r["metadata"]["name"].endswith("-operator")]
    role["metadata"] = {"name": name}
    kube.kubectl("apply", "-f", "-", input=json.dumps(role))


def missing_lines(metrics: OperatorMetrics, namespaces: tuple[str, ...]) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return sorted(
        line
        for line in text.splitlines()
        if line.startswith("luna_operator_pods_missing_sidecar{")
        and any(f'luna_namespace="{ns}"' in line for ns in namespaces)
    )


async def audit_as(
    who: Any, metrics: OperatorMetrics, namespaces: tuple[str, ...]
) -> tuple[InjectionAudit, Any]:
    from kubernetes_asyncio.client import ApiClient

    client = ApiClient(await who.configuration())
    api = KubeClusterApi(client, metrics)
    api.pod_page = 2  # several pages even for these few pods
    return InjectionAudit(api, SIDECAR, metrics, EventRecorder(api, metrics), namespaces=namespaces), client


async def test_the_scan_finds_pods_left_without_their_sidecar_with_the_charts_rights(
    kube: Any, namespace: str, tmp_path: Path
) -> None:
    enabled = f"{namespace}-on"
    role = f"t-audit-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", enabled)
    kube.kubectl("label", "namespace", enabled, "luna.dev/inject=enabled", "luna-plugins.test=true")
    try:
        operator_role_as(kube, role)
        kube.kubectl("create", "serviceaccount", "auditor", "-n", namespace)
        kube.kubectl(
            "create",
            "clusterrolebinding",
            role,
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:auditor",
        )
        make_pod(kube, namespace, "asks", labels=ASKS)
        make_pod(kube, namespace, "by-annotation", annotations=ASKS)
        make_pod(kube, namespace, "by-hand", labels=ASKS, containers=("app", SIDECAR))
        make_pod(kube, namespace, "injected", labels=ASKS, annotations={"luna.dev/injected": SIDECAR})
        make_pod(kube, namespace, "plain")
        make_pod(kube, namespace, "finished", labels=ASKS)
        kube.kubectl(
            "patch", "pod", "finished", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", '{"status": {"phase": "Succeeded"}}',
        )  # fmt: skip
        make_pod(kube, namespace, "leaving", labels=ASKS, finalizers=["luna.dev/test-hold"])
        kube.kubectl("delete", "pod", "leaving", "-n", namespace, "--wait=false")
        make_pod(kube, enabled, "member")
        make_pod(kube, enabled, "refuses", labels={"luna.dev/inject": "disabled"})

        # without the chart's rights the scan fails cleanly: counted, nothing reported
        kube.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
        nobody = service_account_kube(kube, namespace, "nobody", tmp_path / "accounts")
        metrics = OperatorMetrics()
        audit, client = await audit_as(nobody, metrics, (namespace, enabled))
        try:
            assert await audit.audit() is None
        finally:
            await client.close()
        assert (
            'luna_operator_injection_audits_total{outcome="error"} 1.0'
            in generate_latest(metrics.registry).decode()
        )

        auditor = service_account_kube(kube, namespace, "auditor", tmp_path / "accounts")
        metrics = OperatorMetrics()
        audit, client = await audit_as(auditor, metrics, (namespace, enabled))
        everywhere, everywhere_client = await audit_as(auditor, OperatorMetrics(), ())
        try:
            expected = [
                (namespace, "asks", "not-injected"),
                (namespace, "by-annotation", "annotation-only"),
                (enabled, "member", "not-injected"),
            ]
            found = await audit.audit()
            assert sorted((p.namespace, p.name, p.reason) for p in found or []) == sorted(expected)
            # the whole cluster, page by page, finds the same among these namespaces (and posts nothing)
            across = [p for p in await everywhere.scan() if p.namespace in (namespace, enabled)]
            assert sorted((p.namespace, p.name, p.reason) for p in across) == sorted(expected)
            gauge = "luna_operator_pods_missing_sidecar"
            assert missing_lines(metrics, (namespace, enabled)) == sorted(
                [
                    f'{gauge}{{luna_namespace="{namespace}",reason="annotation-only"}} 1.0',
                    f'{gauge}{{luna_namespace="{namespace}",reason="not-injected"}} 1.0',
                    f'{gauge}{{luna_namespace="{enabled}",reason="not-injected"}} 1.0',
                ]
            )
            events = json.loads(
                kube.kubectl(
                    "get", "events", "-A", "--field-selector", "reason=SidecarMissing", "-o", "json"
                ).stdout
            )["items"]
            mine = sorted(
                (e["involvedObject"]["namespace"], e["involvedObject"]["name"], e["type"])
                for e in events
                if e["involvedObject"]["namespace"] in (namespace, enabled)
            )
            assert mine == sorted((ns, name, "Warning") for ns, name, _ in expected)

            # the workload restarted with its sidecar: the pod leaves the figures
            kube.kubectl("delete", "pod", "asks", "-n", namespace)
            make_pod(kube, namespace, "asks", labels=ASKS, annotations={"luna.dev/injected": SIDECAR})
            found = await audit.audit()
            assert sorted((p.namespace, p.name) for p in found or []) == [
                (namespace, "by-annotation"),
                (enabled, "member"),
            ]
            assert not any('reason="not-injected"' in line and f'"{namespace}"' in line
                           for line in missing_lines(metrics, (namespace,)))  # fmt: skip
        finally:
            await client.close()
            await everywhere_client.close()
    finally:
        kube.kubectl(
            "patch", "pod", "leaving", "-n", namespace, "--type=merge",
            "-p", '{"metadata": {"finalizers": []}}', check=False,
        )  # fmt: skip
        kube.kubectl("delete", "namespace", enabled, "--wait=false", check=False)
        kube.kubectl("delete", "clusterrolebinding", role, "--ignore-not-found", check=False)
        kube.kubectl("delete", "clusterrole", role, "--ignore-not-found", check=False)

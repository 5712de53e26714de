"""The decision of which Pods asked for the sidecar and run without it, and what one scan reports
(pure logic; the scan against the real API server is in test_injection_audit_cluster.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from luna_operator.events import EventRecorder
from luna_operator.injection_audit import InjectionAudit, missing_sidecar
from luna_operator.metrics import OperatorMetrics

SIDECAR = "luna-sidecar"


def pod(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("app",),
    init: tuple[str, ...] = (),
    namespace: str = "team-a",
    phase: str = "Running",
    deleting: bool = False,
    name: str = "p",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {
        "metadata": metadata,
        "spec": {
            "containers": [{"name": c} for c in containers],
            "initContainers": [{"name": c} for c in init],
        },
        "status": {"phase": phase},
    }


def decide(body: dict[str, Any], enabled: bool = False, spec_known: bool = True) -> str | None:
    return missing_sidecar(body, container=SIDECAR, namespace_enabled=enabled, spec_known=spec_known)


def test_a_labelled_pod_without_the_sidecar_was_not_injected() -> None:
    assert decide(pod(labels={"luna.dev/inject": "true"})) == "not-injected"
    # the webhook's objectSelector matches "true" exactly: "True" asked, was never sent, is reported
    assert decide(pod(labels={"luna.dev/inject": "True"})) == "not-injected"


def test_a_pod_of_an_enabled_namespace_asks_unless_it_refuses() -> None:
    assert decide(pod(), enabled=True) == "not-injected"
    assert decide(pod(labels={"luna.dev/inject": "disabled"}), enabled=True) is None
    # refusing by the annotation counts as refusing, as the webhook reads it
    assert decide(pod(annotations={"luna.dev/inject": "disabled"}), enabled=True) is None
    assert decide(pod()) is None


def test_asking_by_the_annotation_alone_is_reported_as_such() -> None:
    assert decide(pod(annotations={"luna.dev/inject": "true"})) == "annotation-only"
    # in an enabled namespace the namespace's webhook is called for it: plainly not injected
    assert decide(pod(annotations={"luna.dev/inject": "true"}), enabled=True) == "not-injected"
    assert decide(pod(annotations={"luna.dev/inject": "yes"})) is None


def test_a_pod_with_the_sidecar_is_not_reported() -> None:
    asks = {"luna.dev/inject": "true"}
    assert decide(pod(labels=asks, containers=("app", SIDECAR))) is None
    assert decide(pod(labels=asks, init=(SIDECAR,))) is None  # a native sidecar (init container)
    assert decide(pod(labels=asks, annotations={"luna.dev/injected": SIDECAR})) is None
    # another container's name is not the sidecar's
    assert decide(pod(labels=asks, containers=("app", "luna-sidecar-old"))) == "not-injected"


def test_metadata_alone_cannot_clear_a_pod_but_the_annotation_can() -> None:
    asks = {"luna.dev/inject": "true"}
    assert decide(pod(labels=asks, containers=("app", SIDECAR)), spec_known=False) == "not-injected"
    assert decide(pod(labels=asks, annotations={"luna.dev/injected": "x"}), spec_known=False) is None


def test_finished_deleted_and_system_pods_are_left_alone() -> None:
    asks = {"luna.dev/inject": "true"}
    assert decide(pod(labels=asks, phase="Succeeded")) is None
    assert decide(pod(labels=asks, phase="Failed")) is None
    assert decide(pod(labels=asks, deleting=True)) is None
    assert decide(pod(labels=asks, namespace="kube-system")) is None


def test_hostile_shapes_do_not_raise() -> None:
    for body in (
        {},
        {"metadata": None, "spec": None, "status": None},
        {"metadata": {"labels": {"luna.dev/inject": "true"}}, "spec": {"containers": ["x", None, 3]}},
        {"metadata": {"labels": {"luna.dev/inject": None}, "annotations": {"luna.dev/inject": 7}}},
    ):
        missing_sidecar(body, container=SIDECAR, namespace_enabled=True)


class FakePods:
    """Pods served in pages of one, namespaces by label, events recorded (unit tests only)."""

    def __init__(self, pods: list[dict[str, Any]], enabled: list[str]) -> None:
        self.pods = pods
        self.enabled = enabled
        self.events: list[dict[str, Any]] = []
        self.fail = False

    async def list_pod_metadata(
        self, namespace: str | None, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        if self.fail:
            raise RuntimeError("the API server went away")
        mine = [p for p in self.pods if namespace is None or p["metadata"]["namespace"] == namespace]
        at = int(token or 0)
        page = [{"metadata": p["metadata"]} for p in mine[at : at + 1]]
        return page, str(at + 1) if at + 1 < len(mine) else None

    async def list_namespace_names(self, label_selector: str) -> list[str]:
        assert label_selector == "luna.dev/inject=enabled"
        return self.enabled

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        for p in self.pods:
            if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, name):
                return p
        return None

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.events.append(body)


def gauge_lines(metrics: OperatorMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return sorted(
        line for line in text.splitlines() if line.startswith("luna_operator_pods_missing_sidecar{")
    )


async def test_one_scan_counts_per_namespace_and_announces_each_pod_once() -> None:
    asks = {"luna.dev/inject": "true"}
    pods = [
        pod(name="a1", labels=asks),
        pod(name="a2", labels=asks),
        pod(name="a3", labels=asks, containers=("app", SIDECAR)),  # written in by hand
        pod(name="b1", namespace="team-b"),
        pod(name="b2", namespace="team-b", annotations={"luna.dev/inject": "true"}),
        pod(name="c1", namespace="team-c", annotations={"luna.dev/inject": "true"}),
    ]
    api = FakePods(pods, enabled=["team-b"])
    metrics = OperatorMetrics()
    audit = InjectionAudit(api, SIDECAR, metrics, EventRecorder(api, metrics))  # type: ignore[arg-type]
    found = await audit.audit()
    assert found is not None
    assert [(p.namespace, p.name, p.reason) for p in found] == [
        ("team-a", "a1", "not-injected"),
        ("team-a", "a2", "not-injected"),
        ("team-b", "b1", "not-injected"),
        ("team-b", "b2", "not-injected"),
        ("team-c", "c1", "annotation-only"),
    ]
    assert gauge_lines(metrics) == [
        'luna_operator_pods_missing_sidecar{luna_namespace="team-a",reason="not-injected"} 2.0',
        'luna_operator_pods_missing_sidecar{luna_namespace="team-b",reason="not-injected"} 2.0',
        'luna_operator_pods_missing_sidecar{luna_namespace="team-c",reason="annotation-only"} 1.0',
    ]
    assert sorted(e["involvedObject"]["name"] for e in api.events) == ["a1", "a2", "b1", "b2", "c1"]
    event = next(e for e in api.events if e["involvedObject"]["name"] == "c1")
    assert event["type"] == "Warning" and event["reason"] == "SidecarMissing"
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["uid"] == "uid-team-c-c1"
    assert "label the pod template luna.dev/inject=true" in event["message"].lower()

    # the next scan announces nothing again; a pod that got well leaves the figures
    pods.remove(pods[0])
    pods[-1]["metadata"]["labels"] = {"luna.dev/inject": "disabled"}
    await audit.audit()
    assert len(api.events) == 5
    assert gauge_lines(metrics) == [
        'luna_operator_pods_missing_sidecar{luna_namespace="team-a",reason="not-injected"} 1.0',
        'luna_operator_pods_missing_sidecar{luna_namespace="team-b",reason="not-injected"} 2.0',
    ]

    # a failed scan is counted and keeps the last figures
    api.fail = True
    assert await audit.audit() is None
    assert len(gauge_lines(metrics)) == 2
    text = generate_latest(metrics.registry).decode()
    assert 'luna_operator_injection_audits_total{outcome="error"} 1.0' in text
    assert 'luna_operator_injection_audits_total{outcome="ok"} 2.0' in text


async def test_watched_namespaces_limit_the_scan_and_an_event_that_fails_is_tried_again() -> None:
    asks = {"luna.dev/inject": "true"}
    api = FakePods([pod(name="a", labels=asks), pod(name="z", namespace="elsewhere", labels=asks)], [])
    metrics = OperatorMetrics()
    refused: list[int] = []

    async def refuse_once(namespace: str, body: dict[str, Any]) -> None:
        if not refused:
            refused.append(1)
            raise RuntimeError("events are refused")
        api.events.append(body)

    api.create_event = refuse_once  # type: ignore[method-assign]
    audit = InjectionAudit(
        api,  # type: ignore[arg-type]
        SIDECAR,
        metrics,
        EventRecorder(api, metrics),  # type: ignore[arg-type]
        namespaces=("team-a",),
        namespace_opt_in=False,
    )
    found = await audit.audit()
    assert [p.name for p in found or []] == ["a"] and api.events == []
    await audit.audit()
    assert [e["involvedObject"]["name"] for e in api.events] == ["a"]

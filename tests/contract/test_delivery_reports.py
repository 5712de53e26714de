"""Delivery figures in the per-pod report: an at-least-once plugin with a backlog, dead letters or
a breaker not closed is listed with them (summed over its classes); an idle one adds nothing, so
a report at rest stays as small as before; the operator reads such an entry as the running
version it is."""

from __future__ import annotations

import json
from typing import Any

from luna_contract.reports import DeliveryReport, PluginReport, active_revision, differences
from luna_operator.reports import PodPlugin, parse_report
from luna_sidecar.kube.kube_report import RuntimeReporter
from tests.support.reports_kit import pod_reporter

H1 = "1" * 64


def queue(**figures: Any) -> dict[str, Any]:
    """A class's ``delivery`` object as ``GET /plugins`` shows it."""
    described = {
        "mode": "at-least-once",
        "pending": 0,
        "pendingBytes": 0,
        "oldestBatchAgeSeconds": 0.0,
        "deadLetters": 0,
        "breaker": "closed",
        "breakerOpened": 0,
    }
    return described | figures


def plugin(*queues: dict[str, Any]) -> dict[str, Any]:
    classes = [{"name": f"C{index}", "kind": "event", "delivery": q} for index, q in enumerate(queues)]
    return {"name": "forwarder", "state": "running", "codeHash": H1, "classes": classes}


def reporter(plugins: list[dict[str, Any]]) -> RuntimeReporter:
    return pod_reporter(plugins, {"forwarder": H1})


def test_an_idle_durable_plugin_adds_nothing_to_a_report_at_rest() -> None:
    body = reporter([plugin(queue(), queue())]).body()
    assert body["spec"]["plugins"] == []
    in_memory = {
        "name": "forwarder",
        "state": "running",
        "codeHash": H1,
        "classes": [{"name": "C", "kind": "event"}],
    }
    assert reporter([in_memory]).body()["spec"]["plugins"] == []


def test_a_backlog_dead_letters_and_an_open_breaker_are_summed_over_the_classes() -> None:
    busy = plugin(
        queue(pending=3, oldestBatchAgeSeconds=42.7, breaker="half-open"),
        queue(pending=2, oldestBatchAgeSeconds=600.2, deadLetters=1, breaker="open"),
        queue(),
    )
    body = reporter([busy]).body()
    (entry,) = body["spec"]["plugins"]
    assert entry == {
        "module": "forwarder",
        "state": "running",
        "codeHash": H1,
        "delivery": {"pending": 5, "oldestBatchAgeSeconds": 600, "deadLetters": 1, "breaker": "open"},
    }
    assert len(json.dumps(entry)) < 220  # bounded: one small object per plugin, whatever its classes
    # the operator reads it as the running version the active list names, holding one dead letter
    stored = {**body, "metadata": {**body["metadata"], "namespace": "ns", "uid": "u"}}
    revision = active_revision({"forwarder": H1})
    report = parse_report(stored, received=2e9, revisions={("ns", "handlers"): {revision: {"forwarder": H1}}})
    assert report is not None and report.plugins.get("forwarder") == PodPlugin("running", H1, dead_letters=1)


def test_only_dead_letters_or_only_a_breaker_are_reported_too() -> None:
    (entry,) = reporter([plugin(queue(deadLetters=4))]).body()["spec"]["plugins"]
    assert entry["delivery"] == {"deadLetters": 4}
    (entry,) = reporter([plugin(queue(breaker="open"))]).body()["spec"]["plugins"]
    assert entry["delivery"] == {"breaker": "open"}


def test_an_entry_with_delivery_figures_differs_from_the_named_version() -> None:
    quiet = PluginReport("forwarder", "running", code_hash=H1)
    busy = PluginReport("forwarder", "running", code_hash=H1, delivery=DeliveryReport(pending=1))
    assert differences([quiet], {"forwarder": H1}) == []
    assert differences([busy], {"forwarder": H1}) == [busy]

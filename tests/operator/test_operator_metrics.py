"""The operator's metrics: promtool-clean, bounded whatever the cluster holds, served on /metrics."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client import generate_latest

from luna_operator.metrics import OTHER, OperatorMetrics, PluginGauges, ServiceGauges
from luna_operator.metrics_http import metrics_app


def filled(metrics: OperatorMetrics) -> OperatorMetrics:
    metrics.observe_pass("ns", "handlers", "full", "ok", 0.02)
    metrics.observe_pass("ns", "handlers", "status", "incomplete", 0.004)
    metrics.api_requests.labels("update", "configmaps").inc()
    metrics.api_errors.labels("update", "configmaps", "409").inc()
    metrics.report_events.labels("modified").inc(3)
    metrics.report_delay.observe(0.2)
    metrics.webhook_requests.labels("validate", "denied").inc()
    metrics.webhook_duration.labels("validate").observe(0.003)
    metrics.kubernetes_events.labels("Invalid").inc()
    metrics.sources.pending = lambda: {"full": 1}
    metrics.sources.phases = lambda: {"Ready": 3, "Invalid": 1}
    metrics.sources.services = lambda: [ServiceGauges("ns", "handlers", 5, 1, 42.0)]
    metrics.sources.plugins = lambda: [PluginGauges("ns", "handlers", "p", 1, 1)]
    return metrics


def test_the_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus')")
    text = generate_latest(filled(OperatorMetrics()).registry).decode()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    assert 'luna_operator_lunaplugins{phase="Ready"} 3.0' in text
    assert 'luna_operator_lunaplugins{phase="Pending"} 0.0' in text  # every phase, always
    assert 'luna_operator_reporting_pods{luna_namespace="ns",luna_service="handlers"} 5.0' in text


def test_no_label_clashes_with_the_target_labels_prometheus_adds() -> None:
    registry = filled(OperatorMetrics()).registry
    names = {name for family in registry.collect() for sample in family.samples for name in sample.labels}
    assert not names & {"namespace", "service", "pod", "job", "instance", "container", "endpoint"}


def test_thousands_of_services_and_plugins_keep_the_series_bounded() -> None:
    metrics = OperatorMetrics(max_services=20, max_plugins=30)
    for index in range(500):
        metrics.observe_pass("ns", f"svc-{index}", "status", "ok", 0.001)
    metrics.sources.services = lambda: [ServiceGauges("ns", f"svc-{i}", 1, 0, 1.0) for i in range(500)]
    metrics.sources.plugins = lambda: [PluginGauges("ns", "svc", f"p-{i}", 1, 0) for i in range(5000)]
    families = {family.name: family for family in metrics.registry.collect()}
    passes = {
        tuple(s.labels.values())
        for s in families["luna_operator_passes"].samples
        if s.name.endswith("_total")
    }
    assert len(passes) == 21 and (OTHER, OTHER, "status", "ok") in passes
    other = next(s for s in families["luna_operator_passes"].samples if s.labels["luna_service"] == OTHER)
    assert other.value == 480  # every pass still counted
    reporting = families["luna_operator_reporting_pods"].samples
    assert len(reporting) == 21 and sum(s.value for s in reporting) == 500
    outdated = families["luna_operator_plugin_outdated_pods"].samples
    assert len(outdated) == 31 and sum(s.value for s in outdated) == 5000


async def test_metrics_are_served_on_slash_metrics(aiohttp_client: Any) -> None:
    client = await aiohttp_client(metrics_app(filled(OperatorMetrics()).registry))
    reply = await client.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    assert "luna_operator_passes_total" in await reply.text()

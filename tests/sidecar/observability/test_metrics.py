"""The runtime's own metrics and the plugin-state collector."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from luna_sidecar.observability.metrics import (
    PluginState,
    PluginStateCollector,
    QueueState,
    RuntimeMetrics,
    watch_loop_lag,
)
from tests.support.runtime import metric_value, wait_until


def test_runtime_metrics_are_registered_with_their_names(registry: CollectorRegistry) -> None:
    metrics = RuntimeMetrics(registry)
    metrics.plugin_events.labels("p", "C", "handled").inc()
    metrics.reloads.labels("p", "success").inc(2)
    metrics.route_requests.labels("p", "200").inc()
    metrics.intake_requests.labels("monitoring_event", "202").inc()
    metrics.intake_items.labels("monitoring_event").inc(5)
    metrics.label_overflow.labels("m").inc()
    metrics.point_errors.labels("m").inc()
    metrics.callback_seconds.labels("p", "C").observe(0.003)
    assert (
        metric_value(
            registry, "luna_plugin_events_total", {"plugin": "p", "class": "C", "outcome": "handled"}
        )
        == 1
    )
    assert metric_value(registry, "luna_plugin_reloads_total", {"plugin": "p", "result": "success"}) == 2
    assert (
        metric_value(registry, "luna_plugin_route_requests_total", {"plugin": "p", "status_code": "200"}) == 1
    )
    assert (
        metric_value(
            registry, "luna_intake_requests_total", {"event_name": "monitoring_event", "status_code": "202"}
        )
        == 1
    )
    assert metric_value(registry, "luna_intake_items_total", {"event_name": "monitoring_event"}) == 5
    assert metric_value(registry, "luna_metric_label_overflow_total", {"metric": "m"}) == 1
    assert metric_value(registry, "luna_metric_point_errors_total", {"metric": "m"}) == 1
    bucket = {"plugin": "p", "class": "C", "le": "0.0025"}
    assert metric_value(registry, "luna_plugin_callback_duration_seconds_bucket", bucket) == 0
    assert (
        metric_value(registry, "luna_plugin_callback_duration_seconds_bucket", bucket | {"le": "0.005"}) == 1
    )


def test_plugin_state_collector_reads_the_snapshot_at_scrape_time(registry: CollectorRegistry) -> None:
    snapshot = [PluginState("kettle", "abc", "running", [QueueState("Kettle", 0, 0)])]
    registry.register(PluginStateCollector(lambda: snapshot))
    assert metric_value(registry, "luna_plugins", {"state": "running"}) == 1
    assert metric_value(registry, "luna_plugins", {"state": "failed"}) == 0
    snapshot[:] = [
        PluginState("kettle", "abc", "failed", []),
        PluginState("digest", "def", "running", [QueueState("Digest", 3, 30), QueueState("Sender", 0, 0)]),
        PluginState("broken", "", "failed", []),
    ]
    assert metric_value(registry, "luna_plugins", {"state": "failed"}) == 2
    assert metric_value(registry, "luna_plugins", {"state": "running"}) == 1
    assert metric_value(registry, "luna_plugins", {"state": "loading"}) == 0
    assert (
        metric_value(
            registry, "luna_plugin_info", {"plugin": "digest", "code_hash": "def", "state": "running"}
        )
        == 1
    )
    assert metric_value(registry, "luna_plugin_queue_depth", {"plugin": "digest", "class": "Digest"}) == 3
    assert metric_value(registry, "luna_plugin_queue_items", {"plugin": "digest", "class": "Digest"}) == 30
    assert (
        registry.get_sample_value("luna_plugin_queue_depth", {"plugin": "kettle", "class": "Kettle"}) is None
    )
    states = {
        sample.labels["state"]
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        if family.name == "luna_plugins"
        for sample in family.samples
    }
    assert states == {"loading", "running", "failed", "stopping"}


async def test_watch_loop_lag_records_a_value(registry: CollectorRegistry) -> None:
    gauge = Gauge("lag_seconds", "lag", registry=registry)
    gauge.set(-1)
    task = asyncio.create_task(watch_loop_lag(gauge, interval=0.01))
    try:
        await wait_until(lambda: metric_value(registry, "lag_seconds") >= 0, what="a lag measurement")
    finally:
        task.cancel()
    assert 0 <= metric_value(registry, "lag_seconds") < 1.0

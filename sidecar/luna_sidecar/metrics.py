"""The runtime's own Prometheus metrics, in the sidecar's own registry.

Point-derived metrics (``luna_requests_total``...) live in ``mapping``; this module holds what
the runtime says about itself: plugins by state, events per plugin, queue depth, reloads, route
requests, intake and event-loop lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CALLBACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RuntimeMetrics:
    """All runtime metrics, registered in ``registry``. Plugin labels are the module name
    (``plugin``) and, where a module has several plugin classes, the class (``class``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.plugin_events = Counter(
            "luna_plugin_events",
            "Event batches per plugin by outcome (handled, failed, timeout, dropped on a full queue).",
            ["plugin", "class", "outcome"],
            registry=registry,
        )
        self.callback_seconds = Histogram(
            "luna_plugin_callback_duration_seconds",
            "Time one event callback of a plugin took.",
            ["plugin", "class"],
            buckets=CALLBACK_BUCKETS,
            registry=registry,
        )
        self.reloads = Counter(
            "luna_plugin_reloads",
            "Plugin loads and reloads by result (success, failure).",
            ["plugin", "result"],
            registry=registry,
        )
        self.route_requests = Counter(
            "luna_plugin_route_requests",
            "Requests served by plugin routes, by plugin and status code.",
            ["plugin", "status_code"],
            registry=registry,
        )
        self.intake_requests = Counter(
            "luna_intake_requests",
            "Event intake requests by event name and status code.",
            ["event_name", "status_code"],
            registry=registry,
        )
        self.intake_items = Counter(
            "luna_intake_items",
            "Points or events accepted by the intake, by event name.",
            ["event_name"],
            registry=registry,
        )
        self.loop_lag = Gauge(
            "luna_event_loop_lag_seconds",
            "How late the event loop ran a timer at the last check (a blocked loop shows here).",
            registry=registry,
        )
        self.label_overflow = Counter(
            "luna_metric_label_overflow",
            "Points not recorded in a metric because it already had the maximum number of label sets.",
            ["metric"],
            registry=registry,
        )
        self.point_errors = Counter(
            "luna_metric_point_errors",
            "Points whose values could not be recorded in a mapped metric (e.g. a non-numeric value).",
            ["metric"],
            registry=registry,
        )


class PluginStateCollector(Collector):
    """Reads plugin states and queue depths at scrape time, so nothing is kept twice.

    ``snapshot`` returns (plugin, code hash, state, [(class, queue depth)]) for every plugin.
    """

    STATES = ("loading", "running", "failed", "stopping")

    def __init__(self, snapshot: Callable[[], Iterable[tuple[str, str, str, list[tuple[str, int]]]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("luna_plugins", "Plugins by state.", labels=["state"])
        info = GaugeMetricFamily(
            "luna_plugin_info",
            "One series per active plugin with its code hash and state.",
            labels=["plugin", "code_hash", "state"],
        )
        depth = GaugeMetricFamily(
            "luna_plugin_queue_depth",
            "Event batches waiting in a plugin's queue.",
            labels=["plugin", "class"],
        )
        counts = dict.fromkeys(self.STATES, 0)
        for plugin, digest, state, queues in self._snapshot():
            counts[state] = counts.get(state, 0) + 1
            info.add_metric([plugin, digest, state], 1)
            for class_name, size in queues:
                depth.add_metric([plugin, class_name], size)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield info
        yield depth

    def describe(self) -> Iterator[Metric]:
        return iter(())


async def watch_loop_lag(gauge: Gauge, interval: float = 0.5) -> None:
    """Forever: sleep ``interval`` and record how late the wake-up came."""
    while True:
        expected = time.monotonic() + interval
        await asyncio.sleep(interval)
        gauge.set(max(0.0, time.monotonic() - expected))

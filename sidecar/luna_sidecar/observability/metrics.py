"""The runtime's own Prometheus metrics, in the sidecar's own registry.

Point-derived metrics (``luna_requests_total``...) live in ``mapping``; this module holds what
the runtime says about itself: plugins by state, events per plugin, queue depth, reloads, route
requests, intake, event-loop lag and blocking, and plugin work that outlived its deadline.
Every series labelled with a plugin goes away when that plugin is unloaded
(:meth:`RuntimeMetrics.forget_plugin`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from luna_contract.build_info import register_build_info
from luna_sidecar.observability.loop_metrics import LoopCounter, LoopHistogram

CALLBACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _PluginSeries(Protocol):
    """A metric family with series per plugin (prometheus-client's or :mod:`loop_metrics`)."""

    def collect(self) -> Iterable[Metric]: ...

    def remove(self, *values: str) -> None: ...


class RuntimeMetrics:
    """All runtime metrics, registered in ``registry``. Plugin labels are the module name
    (``plugin``) and, where a module has several plugin classes, the class (``class``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.build_info = register_build_info(registry, "sidecar")
        # the busiest families are changed on the event loop only: no lock (loop_metrics)
        self.plugin_events = LoopCounter(
            "luna_plugin_events",
            "Event batches per plugin by outcome (handled, failed, timeout, dropped on a full queue).",
            ["plugin", "class", "outcome"],
            registry,
        )
        self.callback_seconds = LoopHistogram(
            "luna_plugin_callback_duration_seconds",
            "Time one event callback of a plugin took.",
            ["plugin", "class"],
            registry,
            buckets=CALLBACK_BUCKETS,
        )
        self.reloads = Counter(
            "luna_plugin_reloads",
            "Plugin loads and reloads by result (success, failure).",
            ["plugin", "result"],
            registry=registry,
        )
        self.route_requests = LoopCounter(
            "luna_plugin_route_requests",
            "Requests served by plugin routes, by plugin and status code.",
            ["plugin", "status_code"],
            registry,
        )
        self.intake_requests = LoopCounter(
            "luna_intake_requests",
            "Event intake requests by event name and status code.",
            ["event_name", "status_code"],
            registry,
        )
        self.intake_items = LoopCounter(
            "luna_intake_items",
            "Points or events accepted by the intake, by event name.",
            ["event_name"],
            registry,
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
        self.dropped_items = LoopCounter(
            "luna_plugin_dropped_items",
            "Points or events not delivered to a plugin because its queue was full.",
            ["plugin", "class"],
            registry,
        )
        self.dropped_batches = LoopCounter(
            "luna_plugin_dropped_batches",
            "Event batches accepted by the intake but not delivered to a plugin, by reason: queue_full "
            "(its queue was full), failed (its callback raised; at-most-once), timeout (its callback "
            "ran past --callback-timeout; at-most-once), retired (still "
            "queued when its version was reloaded, unloaded or quarantined), shutdown (still queued at "
            "the shutdown deadline); for durable queues also queue_full_oldest (dropped from a full queue "
            "to make room) and discarded (dead letters discarded).",
            ["plugin", "class", "reason"],
            registry,
        )
        self.contained = Counter(
            "luna_plugin_contained",
            "Things a plugin did that would have harmed the sidecar and were contained, by what: fork "
            "(the child was ended at once), signal_handler (a handler of SIGTERM, SIGINT or SIGHUP was "
            "refused or restored), loop_stop (the event loop was stopped and resumed).",
            ["plugin", "what"],
            registry=registry,
        )
        self.loop_blocked = Counter(
            "luna_event_loop_blocked_seconds",
            "Time the event loop did not turn for longer than the watchdog threshold, whoever held it.",
            registry=registry,
        )
        self.plugin_loop_blocked = Counter(
            "luna_plugin_loop_blocked_seconds",
            "Time the event loop was blocked with this plugin's code on the loop thread's stack.",
            ["plugin"],
            registry=registry,
        )
        self.feed_restarts = Counter(
            "luna_desired_state_feed_restarts",
            "Restarts of the desired-state feed (plugins dir or Kubernetes API) after it failed.",
            registry=registry,
        )
        #: the series labelled ``plugin``, and their label names, for :meth:`forget_plugin`
        self._per_plugin: list[tuple[_PluginSeries, tuple[str, ...]]] = [
            (self.plugin_events, ("plugin", "class", "outcome")),
            (self.callback_seconds, ("plugin", "class")),
            (self.reloads, ("plugin", "result")),
            (self.route_requests, ("plugin", "status_code")),
            (self.dropped_items, ("plugin", "class")),
            (self.dropped_batches, ("plugin", "class", "reason")),
            (self.contained, ("plugin", "what")),
            (self.plugin_loop_blocked, ("plugin",)),
        ]
        self._forget_listeners: list[Callable[[str], None]] = []

    def on_forget(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(plugin)`` when a plugin's series are removed (holders of cached
        metric children must drop theirs, or they would count into series no longer exported)."""
        self._forget_listeners.append(listener)

    def forget_plugin(self, plugin: str) -> None:
        """Remove every series labelled with ``plugin`` (it was unloaded)."""
        for metric, names in self._per_plugin:
            stale = {
                tuple(sample.labels[name] for name in names)
                for family in metric.collect()
                for sample in family.samples
                if sample.labels.get("plugin") == plugin
            }
            for values in stale:
                metric.remove(*values)
        for listener in self._forget_listeners:
            listener(plugin)


@dataclass(frozen=True)
class QueueState:
    """One event plugin class's queue, as the metrics show it."""

    class_name: str
    batches: int
    items: int


@dataclass(frozen=True)
class PluginState:
    """One plugin as the metrics show it (read at scrape time)."""

    plugin: str
    code_hash: str
    state: str
    queues: list[QueueState]


class PluginStateCollector(Collector):
    """Reads plugin states and queue depths at scrape time, so nothing is kept twice."""

    STATES = ("loading", "running", "failed", "stopping")

    def __init__(self, snapshot: Callable[[], Iterable[PluginState]]) -> None:
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
        items = GaugeMetricFamily(
            "luna_plugin_queue_items",
            "Points or events a plugin's queue holds (waiting or in the callback); bounded by --queue-items.",
            labels=["plugin", "class"],
        )
        counts = dict.fromkeys(self.STATES, 0)
        for plugin in self._snapshot():
            counts[plugin.state] = counts.get(plugin.state, 0) + 1
            info.add_metric([plugin.plugin, plugin.code_hash, plugin.state], 1)
            for queue in plugin.queues:
                depth.add_metric([plugin.plugin, queue.class_name], queue.batches)
                items.add_metric([plugin.plugin, queue.class_name], queue.items)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield info
        yield depth
        yield items

    def describe(self) -> Iterator[Metric]:
        return iter(())


class LeftoverCollector(Collector):
    """Plugin work the runtime abandoned and that still runs, per plugin, read at scrape time.

    ``counts`` returns (kind, plugin) -> number, kind ``thread`` or ``task``.
    """

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        threads = GaugeMetricFamily(
            "luna_plugin_stuck_threads",
            "Threads still running a plugin's import or constructor after its lifecycle timeout.",
            labels=["plugin"],
        )
        tasks = GaugeMetricFamily(
            "luna_plugin_abandoned_tasks",
            "Plugin tasks (callbacks, close(), initialize()...) that ignored cancellation and still run.",
            labels=["plugin"],
        )
        for (kind, plugin), count in sorted(self._counts().items()):
            (threads if kind == "thread" else tasks).add_metric([plugin], count)
        yield threads
        yield tasks

    def describe(self) -> Iterator[Metric]:
        return iter(())


async def watch_loop_lag(gauge: Gauge, interval: float = 0.5) -> None:
    """Forever: sleep ``interval`` and record how late the wake-up came."""
    while True:
        expected = time.monotonic() + interval
        await asyncio.sleep(interval)
        gauge.set(max(0.0, time.monotonic() - expected))

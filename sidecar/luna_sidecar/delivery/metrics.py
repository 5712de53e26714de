"""The metrics of durable delivery, in the sidecar's registry, labelled like the runtime's own
(``plugin``, ``class``). Delivered batches count in ``luna_plugin_events{outcome="handled"}`` and
lost ones in ``luna_plugin_dropped_batches{reason}`` like at-most-once delivery's; what is new is
here. Gauges are read from the live queues at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from luna_sidecar.delivery.retry import BREAKER_STATES
from luna_sidecar.observability import RuntimeMetrics
from luna_sidecar.observability.loop_metrics import LoopCounter, LoopHistogram

if TYPE_CHECKING:
    from luna_sidecar.delivery.worker import DurableQueue

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class DeliveryMetrics:
    """Counters and the latency histogram of durable delivery; their series of a plugin go
    when it is unloaded, with the runtime's."""

    def __init__(self, registry: CollectorRegistry, runtime: RuntimeMetrics) -> None:
        self.retries = LoopCounter(
            "luna_plugin_delivery_retries",
            "Failed attempts of a durable plugin queue's batch that were retried.",
            ["plugin", "class"],
            registry,
        )
        self.dead_lettered = LoopCounter(
            "luna_plugin_dead_lettered_batches",
            "Batches moved to a plugin's dead letters after exhausting their retries.",
            ["plugin", "class"],
            registry,
        )
        self.quarantined = LoopCounter(
            "luna_plugin_delivery_quarantined_segments",
            "Damaged segment files of a durable plugin queue moved to its quarantine directory.",
            ["plugin", "class"],
            registry,
        )
        self.latency = LoopHistogram(
            "luna_plugin_delivery_latency_seconds",
            "Time from a batch's acceptance by the intake to its successful delivery (durable queues).",
            ["plugin", "class"],
            registry,
            buckets=LATENCY_BUCKETS,
        )
        self._families = (self.retries, self.dead_lettered, self.quarantined, self.latency)
        runtime.on_forget(self.forget)

    def forget(self, plugin: str) -> None:
        """Remove the series of ``plugin``."""
        for family in self._families:
            stale = {
                (sample.labels["plugin"], sample.labels["class"])
                for metric in family.collect()
                for sample in metric.samples
                if sample.labels.get("plugin") == plugin
            }
            for values in stale:
                family.remove(*values)


class QueueCollector(Collector):
    """Depth, bytes, oldest batch age, dead letters and breaker state of every durable queue
    that has a running worker, read at scrape time."""

    def __init__(self, queues: Callable[[], Iterable[DurableQueue]]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        labels = ["plugin", "class"]
        batches = GaugeMetricFamily(
            "luna_plugin_delivery_queue_batches",
            "Batches in a durable plugin queue not delivered yet.",
            labels=labels,
        )
        size = GaugeMetricFamily(
            "luna_plugin_delivery_queue_bytes",
            "Bytes on disk of a durable plugin queue's batches not delivered yet (bounded by the policy).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "luna_plugin_delivery_oldest_batch_age_seconds",
            "Age of the oldest batch not delivered yet of a durable plugin queue (0 when empty).",
            labels=labels,
        )
        dead = GaugeMetricFamily(
            "luna_plugin_dead_letters", "Dead letters a durable plugin queue holds now.", labels=labels
        )
        breaker = GaugeMetricFamily(
            "luna_plugin_delivery_breaker_state",
            "1 for the state a durable plugin queue's circuit breaker is in (closed, open, half-open).",
            labels=[*labels, "state"],
        )
        now = time.time()
        for queue in self._queues():
            key = [queue.plugin, queue.class_name]
            batches.add_metric(key, queue.log.pending)
            size.add_metric(key, queue.log.pending_bytes)
            age.add_metric(key, queue.oldest_age(now))
            dead.add_metric(key, queue.dead.count)
            for state in BREAKER_STATES:
                breaker.add_metric([*key, state], 1.0 if queue.breaker.state == state else 0.0)
        yield from (batches, size, age, dead, breaker)

    def describe(self) -> Iterator[Metric]:
        return iter(())

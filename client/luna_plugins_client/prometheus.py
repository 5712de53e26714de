"""A sender's counters as Prometheus metrics, with one call.

:func:`register_sender_metrics` registers a collector that reads :meth:`SidecarSender.stats`
at each scrape (nothing is counted twice, nothing is kept in between):

- ``<prefix>_points_sent_total``, ``_points_dropped_total``, ``_points_refused_total``
  (counters; refused ones are part of the dropped), ``_points_buffered`` (gauge);
- the same four for events (``<prefix>_events_...``);
- ``<prefix>_retries_total``: requests to the sidecar that failed and were tried again.

The prefix defaults to ``luna_client``. Needs ``prometheus-client``
(``luna-plugins-client[prometheus]``); it is imported only by this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import REGISTRY, CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from luna_plugins_client.sender import SenderStats, SidecarSender

DEFAULT_PREFIX = "luna_client"


class SenderCollector(Collector):
    """Reads a sender's counters at each scrape; ``labels`` are added to every sample (to tell
    several senders of one process apart)."""

    def __init__(
        self, sender: SidecarSender, *, prefix: str = DEFAULT_PREFIX, labels: Mapping[str, str] | None = None
    ):
        self.sender = sender
        self.prefix = prefix
        self.labels = dict(labels or {})

    def describe(self) -> Iterator[Metric]:
        """The families (what a registry checks for names registered twice)."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        stats: SenderStats = self.sender.stats()
        names, values = list(self.labels), list(self.labels.values())
        for kind in ("points", "events"):
            for what, meaning in (
                ("sent", "accepted by the sidecar"),
                ("dropped", "that will never be sent (backlog full, refused, or left at close)"),
                ("refused", "the sidecar refused (counted among the dropped too)"),
            ):
                counter = CounterMetricFamily(
                    f"{self.prefix}_{kind}_{what}", f"{kind.capitalize()} {meaning}.", labels=names
                )
                counter.add_metric(values, getattr(stats, f"{kind}_{what}"))
                yield counter
            gauge = GaugeMetricFamily(
                f"{self.prefix}_{kind}_buffered",
                f"{kind.capitalize()} held now, waiting or being sent.",
                labels=names,
            )
            gauge.add_metric(values, getattr(stats, f"{kind}_buffered"))
            yield gauge
        retries = CounterMetricFamily(
            f"{self.prefix}_retries",
            "Requests to the sidecar that failed and were tried again.",
            labels=names,
        )
        retries.add_metric(values, stats.retried)
        yield retries


def register_sender_metrics(
    sender: SidecarSender,
    *,
    registry: CollectorRegistry | None = None,
    prefix: str = DEFAULT_PREFIX,
    labels: Mapping[str, str] | None = None,
) -> SenderCollector:
    """Export ``sender``'s counters on ``registry`` (default: prometheus-client's global one,
    which ``start_http_server`` and ``generate_latest()`` serve); returns the collector, to
    ``registry.unregister`` it. Raises ``ValueError`` when the names are registered already
    (a second sender needs other ``labels`` and its own registry, or another ``prefix``)."""
    collector = SenderCollector(sender, prefix=prefix, labels=labels)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


__all__ = ["DEFAULT_PREFIX", "SenderCollector", "register_sender_metrics"]

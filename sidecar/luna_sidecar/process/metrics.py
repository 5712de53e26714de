"""Metrics of the isolated plugins' processes (``luna_plugin_process_*``)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ProcessMetrics"]

#: seconds spent crossing the process boundary (both ways, the plugin's own time taken out)
CROSSING_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0)


class ProcessMetrics:
    """Counters and gauges per isolated plugin, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._owners: dict[str, object] = {}
        self.up = Gauge(
            "luna_plugin_process_up",
            "1 while an isolated plugin's process runs and is loaded, 0 while it restarts or is quarantined",
            ["plugin"],
            registry=registry,
        )
        self.exits = Counter(
            "luna_plugin_process_exits",
            "Unexpected ends of isolated plugins' processes, by reason "
            "(memory, stalled, exit, a signal's name such as sigsegv, protocol, load_timeout)",
            ["plugin", "reason"],
            registry=registry,
        )
        self.restarts = Counter(
            "luna_plugin_process_restarts",
            "Restarts of isolated plugins' processes after they ended",
            ["plugin"],
            registry=registry,
        )
        self.crossing = Histogram(
            "luna_plugin_process_crossing_seconds",
            "Time a call to an isolated plugin spent crossing the process boundary, both ways "
            "(its handler's own time taken out), by kind (event, route)",
            ["plugin", "kind"],
            buckets=CROSSING_BUCKETS,
            registry=registry,
        )
        self.rss = Gauge(
            "luna_plugin_process_resident_memory_bytes",
            "Resident memory of each isolated plugin's process",
            ["plugin"],
            registry=registry,
        )
        self.cpu = Gauge(
            "luna_plugin_process_cpu_seconds",
            "CPU time (user and system) of each isolated plugin's current process",
            ["plugin"],
            registry=registry,
        )

    def claim(self, plugin: str, owner: object) -> None:
        """``owner`` (a version's supervisor) is the one whose figures ``plugin``'s series show
        from now on: a retiring version's :meth:`release` leaves them alone."""
        self._owners[plugin] = owner

    def release(self, plugin: str, owner: object) -> None:
        """``owner``'s version ended: its gauges go, unless a newer version owns them."""
        if self._owners.get(plugin) is owner:
            del self._owners[plugin]
            self._remove(plugin, (self.up, self.rss, self.cpu))

    def forget(self, plugin: str) -> None:
        """``plugin`` was unloaded: every series of it goes."""
        self._owners.pop(plugin, None)
        self._remove(plugin, (self.up, self.rss, self.cpu, self.restarts))
        for metric in (self.exits, self.crossing):
            for labels in [labels for labels in _label_sets(metric) if labels[0] == plugin]:
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)

    @staticmethod
    def _remove(plugin: str, metrics: tuple[Gauge | Counter, ...]) -> None:
        for metric in metrics:
            with contextlib.suppress(KeyError):
                metric.remove(plugin)


def _label_sets(metric: Counter | Histogram) -> list[tuple[str, ...]]:
    """The label values of ``metric``'s children."""
    return [tuple(labels) for labels in metric._metrics]  # the client keeps its children by label values

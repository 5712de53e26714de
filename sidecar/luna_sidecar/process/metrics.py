"""Metrics of the isolated plugins' processes (``luna_plugin_process_*``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ProcessMetrics"]

#: seconds spent crossing the process boundary (both ways, the plugin's own time taken out)
CROSSING_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0)


class ProcessMetrics:
    """Counters and gauges per isolated plugin, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
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

    def forget(self, plugin: str) -> None:
        """Remove ``plugin``'s series (its version was retired)."""
        for metric in (self.up, self.rss, self.cpu):
            try:
                metric.remove(plugin)
            except KeyError:
                pass

"""The sidecar's Prometheus metrics: its own (``metrics``, on the loop-only counters and histograms
of ``loop_metrics``) and those derived from monitoring points (``mapping``).
"""

from luna_sidecar.observability.loop_metrics import CounterChild
from luna_sidecar.observability.mapping import MappingError, PointMetrics, exposed_label, load_rules
from luna_sidecar.observability.metrics import (
    LeftoverCollector,
    PluginState,
    PluginStateCollector,
    QueueState,
    RuntimeMetrics,
    watch_loop_lag,
)

__all__ = [
    "CounterChild",
    "LeftoverCollector",
    "MappingError",
    "PluginState",
    "PluginStateCollector",
    "PointMetrics",
    "QueueState",
    "RuntimeMetrics",
    "exposed_label",
    "load_rules",
    "watch_loop_lag",
]

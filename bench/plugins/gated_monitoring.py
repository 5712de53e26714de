"""Benchmark plugin: the no-op monitoring plugin, failing unless a marker file existed at its start.

``bench/delivery_bench.py --backlog-mib N`` uses it to fill an at-least-once queue: a sidecar
started while the file named by ``LUNA_BENCH_GATE`` is absent fails every batch (which waits in
the durable queue); one started once it exists walks the batches like ``noop_monitoring``.
"""

import os

from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin


class GatedMonitoring(BaseEventPlugin):
    """Raises if the gate file was absent at its start; otherwise counts the ``requests`` points seen."""

    eventName = "monitoring_event"

    def __init__(self, app):
        super().__init__(app)
        gate = os.environ.get("LUNA_BENCH_GATE", "")
        self.open = bool(gate) and os.path.exists(gate)
        self.seen = 0

    async def handleEvent(self, points, logger):
        if not self.open:
            raise RuntimeError("gate closed: the benchmark is filling the queue")
        seen = 0
        for point in points:
            if point.series == "requests" and point.tags.get("status_code") is not None:
                seen += 1
        self.seen += seen

"""Benchmark plugin: a monitoring plugin that does the least a real one would do.

It looks at every point of every batch (series and one tag), so the measured cost includes
handing the batch to a plugin and walking it, but no plugin-specific work.
"""

from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin


class NoopMonitoring(BaseEventPlugin):
    """Walks each batch and keeps a running count of the ``requests`` points seen."""

    eventName = "monitoring_event"

    def __init__(self, app):
        super().__init__(app)
        self.seen = 0

    async def handleEvent(self, points, logger):
        seen = 0
        for point in points:
            if point.series == "requests" and point.tags.get("status_code") is not None:
                seen += 1
        self.seen += seen

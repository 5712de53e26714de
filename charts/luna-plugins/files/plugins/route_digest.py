"""Event + background collaboration example: a monitoring plugin tallies the service's requests
points per route and a background plugin in the same module serves the tally at /digest."""

from collections import Counter

from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundPlugin,
    BaseEventPlugin,
    pluginHTTPResponse,
)

TALLY: Counter = Counter()
SLOW: Counter = Counter()


class RouteTally(BaseEventPlugin):
    """Counts requests per route and status; requests slower than ``slowSeconds`` separately."""

    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        slow = float(self.settings.get("slowSeconds", 0.5))
        for point in points:
            if point.series != "requests":
                continue
            route = point.tags.get("route", "?")
            TALLY[f"{route} {point.tags.get('status_code', '?')}"] += 1
            if float(point.fields.get("execution_time", 0)) > slow:
                SLOW[route] += 1


class DigestRoute(BaseBackgroundPlugin):
    """Serves the tally."""

    async def initialize(self):
        self.addRoute("/digest", self.digest)

    async def digest(self, request):
        return pluginHTTPResponse(body={"requests": dict(TALLY), "slow": dict(SLOW)})

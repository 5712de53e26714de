"""Benchmark plugin: a background plugin serving ``GET /hello`` with a fixed text."""

from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

HELLO = "hello, world\n"


def hello(request):
    """A synchronous handler with a constant answer, the cheapest route a plugin can have."""
    return pluginHTTPResponse(statusCode=200, body=HELLO, headers={"Content-Type": "text/plain"})


class HelloRoute(BaseBackgroundPlugin):
    """Adds ``GET /hello``; no background work."""

    async def initialize(self):
        self.addRoute("/hello", hello, methods={"get"})

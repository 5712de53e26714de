"""Background plugin example: a kettle that heats up in a background task and serves routes.

Routes (from the service root):
  GET  /kettle             the kettle's state (class-based handler)
  POST /kettle             refill: {"litres": 1.5} resets the temperature
  GET  /kettle/version     a plain function handler
  GET  /kettle/cups/{n}    a path variable
"""

import asyncio

from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundHandler,
    BaseBackgroundPlugin,
    pluginHTTPResponse,
)


class KettleState(BaseBackgroundHandler):
    """Reads and refills the kettle of the plugin that registered this route."""

    async def get(self, request):
        kettle = self.plugin
        return self.response(body={"temperature": kettle.temperature, "litres": kettle.litres})

    async def post(self, request):
        payload = request.json or {}
        litres = payload.get("litres")
        if not isinstance(litres, int | float) or litres <= 0:
            return self.response(body={"error": "send {'litres': <positive number>}"}, statusCode=400)
        self.plugin.litres = float(litres)
        self.plugin.temperature = 20
        return self.response(body={"refilled": litres}, statusCode=201)


def kettle_version(request):
    """A standalone, synchronous handler."""
    return pluginHTTPResponse(statusCode=200, body="kettle 1.0", headers={"Content-Type": "text/plain"})


async def cups(request):
    """An asynchronous handler reading a path variable and a query parameter."""
    count = request.match_info["n"]
    sugar = request.args.get("sugar", "none")
    return pluginHTTPResponse(body={"cups": int(count), "sugar": sugar})


class Kettle(BaseBackgroundPlugin):
    """Heats water by one degree per tick (``tickSeconds`` setting, default 1 s)."""

    def __init__(self, app):
        super().__init__(app)
        self.temperature = 20
        self.litres = 1.0
        self.task = None

    async def initialize(self):
        self.addRoute("/kettle", KettleState)
        self.addRoute("/kettle/version", kettle_version, methods={"get"})
        self.addRoute("/kettle/cups/{n}", cups)

    async def start(self):
        self.task = asyncio.create_task(self.heat())

    async def close(self):
        if self.task:
            self.task.cancel()

    async def heat(self):
        tick = float(self.settings.get("tickSeconds", 1.0))
        while True:
            await asyncio.sleep(tick)
            if self.temperature < 100:
                self.temperature += 1
            else:
                self.app.ctx.logger.debug("the water is boiling")

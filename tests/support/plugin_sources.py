"""Plugin code used by the integration tests (written for the tests, not taken from anywhere)."""

RECORDER = '''
import json
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Recorder(BaseEventPlugin):
    """Appends one JSON line per batch to settings['out']; sleeps settings['delay'] first."""
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        import asyncio
        await asyncio.sleep(float(self.settings.get("delay", 0)))
        with open(self.settings["out"], "a") as out:
            out.write(json.dumps([p.asDict() for p in points]) + "\\n")

    async def close(self):
        with open(self.settings["out"] + ".closed", "w") as out:
            out.write("closed")
'''

SENDING_RECORDER = """
import json
from log import Logger
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event, RawEvent

class SendingRecorder(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime, endEventTime,
                         logger: Logger, *args, **kwargs):
        kinds = ["raw" if isinstance(e, RawEvent) else "event" for e in events]
        docs = [e.asHandlerEventDict() if isinstance(e, RawEvent) else e.asDict() for e in events]
        with open(self.settings["out"], "a") as out:
            out.write(json.dumps({"kinds": kinds, "events": docs, "handlerId": handlerId,
                                  "accountId": accountId, "requestId": requestId,
                                  "logger": logger.name}) + "\\n")
"""


def route_plugin(path: str, answer: str, *, status: int = 200) -> str:
    """A background plugin serving GET ``path`` with a fixed text."""
    return f"""
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def answer(request):
    return pluginHTTPResponse(statusCode={status}, body={answer!r})

class Routes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute({path!r}, answer)
"""


def failing_at(stage: str, *, path: str = "/broken") -> str:
    """A background plugin with a route that fails (raises) at ``stage``."""
    raise_in = {stage: "        raise RuntimeError('boom in " + stage + "')\n"}
    return f"""
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Broken(BaseBackgroundPlugin):
    def __init__(self, app):
        super().__init__(app)
{raise_in.get("construct", "")}
    async def initialize(self):
        self.addRoute({path!r}, lambda request: pluginHTTPResponse(body="should not be served"))
{raise_in.get("initialize", "")}
    async def start(self):
        pass
{raise_in.get("start", "")}
"""


HANGS_IN_INITIALIZE = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Hangs(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/hangs", lambda request: pluginHTTPResponse(body="no"))
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # ignores cancellation on purpose
"""

SLOW_AND_FAILING_EVENTS = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Slow(BaseEventPlugin):
    eventName = "monitoring_event"
    async def handleEvent(self, points, logger):
        await asyncio.sleep(30)

class Failing(BaseEventPlugin):
    eventName = "monitoring_event"
    async def handleEvent(self, points, logger):
        raise ValueError("cannot handle " + str(len(points)))
"""

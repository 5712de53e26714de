"""Plugin files a careless or hostile author could write (written for these tests).

Each constant is the code of one plugin module. The two well-behaved plugins at the end are
what the hostile ones must not disturb: ``GOOD_ROUTES`` answers ``GET /hello`` and
``GOOD_COUNTER`` counts every point (by series) and event it receives and serves the counts
at ``GET /counted``.
"""

#: ~200 KB of ``1+1+...``: the compiler raises RecursionError
RECURSION_AT_COMPILE = "x = " + "+".join(["1"] * 100_000) + "\n"

#: 20 KB of unary minus: the parser raises MemoryError
MEMORY_AT_COMPILE = "x = " + "-" * 20_000 + "1\n"

_ROUTE_CLASS = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Late(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute({path!r}, lambda request: pluginHTTPResponse(body="should never be served"))
"""


def sleeps_at_import(seconds: float, path: str = "/slept") -> str:
    """Blocks its importer for ``seconds``, then defines a perfectly good route plugin."""
    return f"import time\ntime.sleep({seconds})\n" + _ROUTE_CLASS.format(path=path)


EXITS_AT_IMPORT = "import sys\nsys.exit(3)\n"

INTERRUPTS_AT_IMPORT = "raise KeyboardInterrupt('at import')\n"

EXITS_IN_INITIALIZE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class ExitsInInitialize(BaseBackgroundPlugin):
    async def initialize(self):
        raise SystemExit(4)
"""

EXITS_IN_CONSTRUCTOR = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class ExitsInConstructor(BaseBackgroundPlugin):
    def __init__(self, app):
        super().__init__(app)
        raise SystemExit(5)
"""

EXITS_IN_HANDLERS = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin

def exits(request):
    raise SystemExit(6)

async def exits_later():
    await asyncio.sleep(0.2)
    raise SystemExit(7)

class ExitsInRoute(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/exits", exits)

    async def start(self):
        self.task = asyncio.create_task(exits_later())

class ExitsInCallback(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        raise KeyboardInterrupt("in a callback")
"""

#: never returns, whatever happens: the queue of a plugin stalled for good
STALLED_CALLBACK = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Stalled(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
"""

SWALLOWS_IN_CALLBACK = """
import asyncio
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

class Swallows(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                logger.warning("cancelled? no, thanks")
"""

SWALLOWS_IN_CLOSE = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class SwallowsInClose(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/closing", lambda request: pluginHTTPResponse(body="not closed yet"))

    async def close(self):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
"""

SWALLOWS_IN_ROUTE = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

async def stubborn(request):
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

class SwallowsInRoute(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/stubborn", stubborn)
"""

SLEEPS_IN_ROUTE = """
import time
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def snooze(request):
    time.sleep(float(request.args.get("seconds", "0.5")))
    return pluginHTTPResponse(body="yawn")

class SleepsInRoute(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/snooze", snooze)
"""

SLEEPS_IN_CALLBACK = """
import time
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class SleepsInCallback(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        time.sleep(0.3)
"""

GOOD_ROUTES = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Hello(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/hello", lambda request: pluginHTTPResponse(body="hello"))
"""

GOOD_COUNTER = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_plugins.base.plugins_meta.base_plugins import pluginHTTPResponse
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

COUNTS = {"events": 0}

class CountPoints(BaseEventPlugin):
    # counts points by series (route requests become "requests" points too)
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        for point in points:
            COUNTS[point.series] = COUNTS.get(point.series, 0) + 1

class CountEvents(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        COUNTS["events"] += len(events)

class Counted(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/counted", lambda request: pluginHTTPResponse(body=dict(COUNTS)))

    async def close(self):
        with open(self.settings["closed"], "w") as out:
            out.write("closed")
"""

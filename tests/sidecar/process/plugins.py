"""Plugin files of the process-isolation tests: the well-behaved ones that must keep answering
and receiving events, and one hostile plugin per case of the issue's matrix (each meant to run
isolated)."""

from __future__ import annotations

GOOD_ROUTE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Hello(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/hello", lambda request: pluginHTTPResponse(body="hello"))
"""

# counts the points it receives and shows the count (and the process it runs in) on a route;
# ROUTE is replaced per copy so that several can run side by side
COUNTER = """
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_plugins.base.plugins_meta.base_plugins import pluginHTTPResponse

COUNT = {"points": 0}

class CountPoints(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        COUNT["points"] += sum(1 for point in points if point.series == "probe")

class Show(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("ROUTE", lambda request: pluginHTTPResponse(body={**COUNT, "pid": os.getpid()}))
"""


def counter(route: str) -> str:
    """A counting plugin that shows its count at ``route``."""
    return COUNTER.replace("ROUTE", route)


SEGFAULT_IN_ROUTE = """
import ctypes
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Segfault(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/crash", self.crash)

    def crash(self, request):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
"""

EXIT_AT_IMPORT = """
import os
os._exit(3)
"""

EXIT_IN_CALLBACK = """
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class ExitsOnPoison(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        if any(point.series == "poison" for point in points):
            logger.error("about to exit on a poison point")
            os._exit(3)
"""

GROWS_IN_ROUTE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

HELD = []

class Grows(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/grow", self.grow)

    def grow(self, request):
        while True:  # 8 MiB at a time, every page touched, until something stops it
            HELD.append(bytearray(b"x" * (8 * 1024 * 1024)))
"""

GROWS_SLOWLY = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

HELD = []

class GrowsSlowly(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/grow-slowly", self.grow)

    async def grow(self, request):
        while True:  # 4 MiB every 20 ms, the loop turning: only the resident-memory watch stops it
            HELD.append(bytearray(b"x" * (4 * 1024 * 1024)))
            await asyncio.sleep(0.02)
"""

CATASTROPHIC_REGEX_ROUTE = """
import re
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Backtracks(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/regex", self.regex)

    def regex(self, request):
        # exponential backtracking in C, holding the GIL for longer than any test waits
        matched = re.match(r"(a+)+$", "a" * 64 + "b")
        return pluginHTTPResponse(body={"matched": bool(matched)})
"""

SNOOPS = """
import json
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Snoops(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/snoop", self.snoop)

    def snoop(self, request):
        found = {}
        for path in request.args.getlist("path"):
            try:
                with open(path, "rb") as source:
                    found[path] = "read: " + source.read(200).decode("utf-8", "replace")
            except OSError as exc:
                found[path] = "refused: " + type(exc).__name__
        try:
            os.kill(int(request.args.get("signal_pid")), 0)
            found["signal"] = "allowed"
        except (OSError, TypeError, ValueError) as exc:
            found["signal"] = "refused: " + type(exc).__name__
        found["environment"] = sorted(name for name in os.environ if name.startswith("LUNA"))
        found["own_settings"] = dict(self.settings)
        with open("own-file.txt", "w") as own:
            own.write("mine")
        found["own_file"] = open("own-file.txt").read()
        return pluginHTTPResponse(body=found)
"""

FORK_BOMB = """
import os
import time
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Forks(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/fork", self.fork)

    def fork(self, request):
        started = 0
        refused = ""
        for _ in range(5000):
            try:
                pid = os.fork()
            except OSError as exc:
                refused = type(exc).__name__
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            started += 1
        return pluginHTTPResponse(body={"started": started, "refused": refused})
"""

# writes frames of its own on the sidecar's socket (its process holds the descriptor): a forged
# answer splitting the response with CR LF, an impossible status, bytes that decode to nothing
FORGES_FRAMES = """
import socket
import sys
import msgspec
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

SOCK = socket.socket(fileno=int(sys.argv[1]))

def frame(data):
    return len(data).to_bytes(4, "big") + data

class Forges(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/forge/{what}", self.forge)

    def forge(self, request):
        what = request.match_info["what"]
        # the call being answered: the sidecar numbers calls 1, 2, 3... and pings apart
        call = int(request.args.get("call"))
        if what == "split":
            answer = ["answer", call, 200, [["X-Evil", "a\\r\\nSet-Cookie: stolen=1"]], b"forged", 0.0]
        elif what == "status":
            answer = ["answer", call, 1999, [], b"forged", 0.0]
        else:
            SOCK.send(frame(b"\\xc1\\xc1 not msgpack"))
            return None
        SOCK.send(frame(msgspec.msgpack.encode(answer)))
        return None
"""

# at-least-once across the boundary: the delivery context reaches the process, and RetryLater
# asks the sidecar's durable worker for a later retry
RETRIES_ONCE = """
import time
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_plugins.base.plugins_meta.base_plugins import pluginHTTPResponse
from luna_plugins.delivery import RetryLater, delivery_context

SEEN = []

class RetriesOnce(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        info = delivery_context()
        SEEN.append({"id": info.id, "attempt": info.attempt, "at": time.monotonic(), "points": len(points)})
        if info.attempt == 1:
            raise RetryLater(0.5, "not yet")

class Show(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/seen", lambda request: pluginHTTPResponse(body=SEEN))
"""

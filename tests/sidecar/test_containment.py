"""Whatever plugin code raises or blocks on while it is loaded or closed costs only that plugin.

Real sidecar processes: anything raised at compile, import, construction, initialize, start or
close fails that plugin with its reason; an import that blocks runs off the event loop, fails
after the lifecycle timeout, and its late result is never used, not even in ``sys.modules``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support import hostile_plugins as hostile
from tests.support.plugin_sources import route_plugin
from tests.support.sidecar_harness import http, points, wait_for

CUSTOM_BASE_EXCEPTION = """
class Weird(BaseException):
    pass

raise Weird("not an Exception at all")
"""

EXITS_IN_START = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class ExitsInStart(BaseBackgroundPlugin):
    async def start(self):
        raise SystemExit("from start")
"""

EXITS_IN_CLOSE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class ExitsInClose(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/exits-in-close", lambda request: pluginHTTPResponse(body="up"))

    async def close(self):
        raise SystemExit("from close")
"""

INTERRUPTS_IN_SYNC_CLOSE = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class InterruptsInClose(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/interrupts-in-close", lambda request: pluginHTTPResponse(body="up"))

    def close(self):  # not even a coroutine
        raise KeyboardInterrupt("from close")
"""

CONSTRUCTOR_NEEDS_THE_LOOP = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class Eager(BaseBackgroundPlugin):
    def __init__(self, app):
        super().__init__(app)
        self.loop = asyncio.get_running_loop()
"""

#: module -> what GET /plugins says of it
LOAD_FAILURES = {
    "recursion_at_compile": "import: RecursionError: maximum recursion depth exceeded during compilation "
    "(raised by the compiler: an expression is nested or chained too deeply)",
    "memory_at_compile": "import: MemoryError (raised by the compiler",
    "exits_at_import": "import: SystemExit: 3 (at ",
    "interrupts_at_import": "import: KeyboardInterrupt: at import (at ",
    "custom_base_exception": "import: custom_base_exception.Weird: not an Exception at all (at ",
    "exits_in_constructor": "construct: ExitsInConstructor(app): SystemExit: 5 (at ",
    "exits_in_initialize": "initialize: ExitsInInitialize.initialize() raised SystemExit: 4 (at ",
    "exits_in_start": "start: ExitsInStart.start() raised SystemExit: from start (at ",
    "constructor_needs_the_loop": "construct: Eager(app): RuntimeError: no running event loop",
}


def test_anything_raised_while_loading_fails_only_that_plugin(sidecar_factory, tmp_path: Path) -> None:
    plugins = {
        "healthy": route_plugin("/healthy", "fine"),
        "recursion_at_compile": hostile.RECURSION_AT_COMPILE,
        "memory_at_compile": hostile.MEMORY_AT_COMPILE,
        "exits_at_import": hostile.EXITS_AT_IMPORT,
        "interrupts_at_import": hostile.INTERRUPTS_AT_IMPORT,
        "custom_base_exception": CUSTOM_BASE_EXCEPTION,
        "exits_in_constructor": hostile.EXITS_IN_CONSTRUCTOR,
        "exits_in_initialize": hostile.EXITS_IN_INITIALIZE,
        "exits_in_start": EXITS_IN_START,
        "constructor_needs_the_loop": CONSTRUCTOR_NEEDS_THE_LOOP,
        "exits_in_close": EXITS_IN_CLOSE,
        "interrupts_in_close": INTERRUPTS_IN_SYNC_CLOSE,
        "after": route_plugin("/after", "also fine"),
    }
    active_file = tmp_path / "active.json"
    active_file.write_text(json.dumps(list(plugins)))
    sidecar = sidecar_factory(plugins=plugins, args=["--active-file", str(active_file)])
    states = sidecar.plugins()
    for name, reason in LOAD_FAILURES.items():
        assert states[name]["state"] == "failed", name
        assert reason in states[name]["error"], (name, states[name]["error"])
    assert "initialize()" in states["constructor_needs_the_loop"]["error"], "says where to do it instead"
    assert {name for name, state in states.items() if state["state"] == "running"} == {
        "healthy",
        "exits_in_close",
        "interrupts_in_close",
        "after",
    }
    assert sidecar.get("/healthy").text == "fine" and sidecar.get("/after").text == "also fine"

    # close() raising SystemExit or KeyboardInterrupt on unload: logged, the unload completes
    active_file.write_text(json.dumps(["healthy", "after"]))
    wait_for(lambda: set(sidecar.plugins()) == {"healthy", "after"}, what="the unload")
    log = sidecar.log()
    assert "ExitsInClose.close() raised SystemExit: from close" in log
    assert "InterruptsInClose.close() raised KeyboardInterrupt: from close" in log
    assert sidecar.get("/exits-in-close").status == 404
    assert sidecar.get("/healthy").text == "fine"
    assert sidecar.post_event("monitoring_event", points(1)).status == 202
    assert sidecar.stop() == 0


def test_an_import_that_blocks_stalls_nothing_and_fails_after_the_timeout(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"healthy": route_plugin("/healthy", "fine"), "sleepy": hostile.sleeps_at_import(8)},
        active=["healthy", "sleepy"],
        args=["--lifecycle-timeout", "2"],
        wait_ready=False,
    )

    def importing() -> bool:
        assert sidecar.process.poll() is None, sidecar.log()[-3000:]
        try:
            return sidecar.plugins().get("sleepy", {}).get("state") == "loading"
        except (OSError, AssertionError):
            return False

    wait_for(importing, timeout=30, what="the sleeping import to be under way")
    # the import sleeps in its own thread: probes, routes and intake answer meanwhile
    assert http("GET", sidecar.metrics_url + "/healthz").status == 200
    assert http("GET", sidecar.metrics_url + "/readyz").status == 503  # first sync not done yet
    assert sidecar.get("/healthy").text == "fine"
    # the intake answers too, 503 until the first sync is done: the service keeps its events and
    # sends them again, rather than have them accepted before the plugins are there
    starting = sidecar.post_event("monitoring_event", points(1))
    assert starting.status == 503 and "starting" in starting.json()["error"]

    wait_for(lambda: http("GET", sidecar.metrics_url + "/readyz").status == 200, timeout=30, what="ready")
    assert sidecar.post_event("monitoring_event", points(1)).status == 202
    sleepy = sidecar.plugin("sleepy")
    assert sleepy["state"] == "failed"
    assert sleepy["error"] == "import: import did not finish within 2 s"
    assert sleepy["stuck"][0]["kind"] == "thread" and sleepy["stuck"][0]["what"] == "import"
    assert sidecar.metric("luna_plugin_stuck_threads", plugin="sleepy") == 1

    # the thread ends on its own later: its result is discarded, the plugin stays failed
    wait_for(
        lambda: sidecar.metric("luna_plugin_stuck_threads", plugin="sleepy") == 0,
        timeout=30,
        what="the import thread to end",
    )
    assert "abandoned import finished after" in sidecar.log()
    assert sidecar.plugin("sleepy")["state"] == "failed"
    assert sidecar.plugin("sleepy")["stuck"] == []
    assert sidecar.get("/slept").status == 404


PROBE = """
import sys
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def version(request):
    module = sys.modules.get(request.match_info["name"])
    return pluginHTTPResponse(body={"version": getattr(module, "VERSION", None)})

class Probe(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/modules/{name}", version)
"""


def versioned(version: int, *, sleep: float = 0) -> str:
    """Plugin ``slow``: ``VERSION`` and a route answering it, after sleeping ``sleep`` at import."""
    return f"""
import time
time.sleep({sleep})
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

VERSION = {version}

class Versioned(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/slow", lambda request: pluginHTTPResponse(body=str(VERSION)))
"""


def test_a_late_import_never_replaces_a_newer_version(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"probe": PROBE, "slow": versioned(1)},
        active=["probe", "slow"],
        args=["--lifecycle-timeout", "1"],
    )

    def module_version() -> object:
        return sidecar.get("/modules/slow").json()["version"]

    assert sidecar.get("/slow").text == "1" and module_version() == 1
    sidecar.write_plugin("slow", versioned(2, sleep=6))
    wait_for(lambda: sidecar.plugin("slow")["failedCodeHash"] is not None, what="version 2 to time out")
    assert "import did not finish within 1 s" in sidecar.plugin("slow")["error"]
    assert sidecar.get("/slow").text == "1", "version 1 keeps serving"
    assert module_version() == 1, "the unfinished version 2 is not what import gives"

    sidecar.write_plugin("slow", versioned(3))
    wait_for(lambda: sidecar.get("/slow").text == "3", what="version 3 to serve")
    assert module_version() == 3
    # version 2's import ends in its thread after version 3 was published: nothing changes
    wait_for(
        lambda: sidecar.metric("luna_plugin_stuck_threads", plugin="slow") == 0,
        timeout=30,
        what="version 2's import to end",
    )
    time.sleep(0.2)  # let the loop see whatever the ended thread might have left behind
    assert module_version() == 3
    assert sidecar.get("/slow").text == "3"
    assert sidecar.plugin("slow")["state"] == "running"

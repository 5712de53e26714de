"""The red team's findings, each as a plugin file, in one real sidecar next to two well-behaved
plugins that keep answering and counting the whole time (issue: hardening).

A route path that repeats a variable, a catch-all route loaded before another plugin's route,
path variables carrying ``..`` or an encoded slash, ``fork()`` from a route (directly and through
multiprocessing's fork start method), a thread holding the GIL in C code, SIGTERM handlers set
three ways, ``loop.stop()`` (through the loop and past it), and batches lost on a reload.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.sidecar.test_hostile_matrix import GOOD, Traffic, counted
from tests.support import hostile_plugins as hostile
from tests.support.sidecar_harness import wait_for

_HEADER = """
import asyncio, os, re, signal, threading, time, multiprocessing
from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundPlugin, BaseEventPlugin, pluginHTTPResponse,
)
"""

HOSTILE = {
    # re.error out of the route table crashed the sidecar at start-up
    "repeats_variable": _HEADER
    + """
class Repeats(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/y/{b}/z/{b}", lambda request: pluginHTTPResponse(body="never"))
""",
    # loaded first: a catch-all that would receive /users/42 meant for ``users``
    "catch_all": _HEADER
    + """
class CatchAll(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/{a}/{b}", lambda request: pluginHTTPResponse(body={"caught": request.path}))
""",
    "users": _HEADER
    + """
class Users(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/users/{id}", lambda request: pluginHTTPResponse(body="users"))
""",
    "files": _HEADER
    + """
class Files(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/files/x/{name}", lambda request: pluginHTTPResponse(body=request.match_info["name"]))
""",
    "forks": _HEADER
    + """
def child_work():
    time.sleep(0.1)

class Forks(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/red/fork/os", self.fork_os)
        self.addRoute("/red/fork/mp", self.fork_mp)
        self.addRoute("/red/fork/thread", self.fork_thread)
        self.addRoute("/red/fork/program", self.program)

    async def program(self, request):
        # a program started the usual ways is not a fork to contain
        process = await asyncio.create_subprocess_exec("sh", "-c", "exit 3")
        code = await process.wait()
        import subprocess
        other = subprocess.run(["sh", "-c", "exit 4"], preexec_fn=os.getpid).returncode
        return pluginHTTPResponse(body={"exits": [code, other]})

    def fork_os(self, request):
        pid = os.fork()
        # only the parent gets here: the child is ended inside fork()
        _, status = os.waitpid(pid, 0)
        return pluginHTTPResponse(body={"child_exit": os.waitstatus_to_exitcode(status)})

    def fork_mp(self, request):
        process = multiprocessing.get_context("fork").Process(target=child_work)
        process.start()
        process.join(10)
        return pluginHTTPResponse(body={"child_exit": process.exitcode})

    async def fork_thread(self, request):
        def fork_and_wait():
            pid = os.fork()
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        code = await asyncio.get_running_loop().run_in_executor(None, fork_and_wait)
        return pluginHTTPResponse(body={"child_exit": code})
""",
    # C code holding the GIL in a thread of its own: the loop stalls while its stack looks idle
    "gil_hog": _HEADER
    + """
class GilHog(BaseBackgroundPlugin):
    async def start(self):
        self.stop = threading.Event()
        threading.Thread(target=self.hog, name="gil-hog", daemon=True).start()

    def hog(self):
        while not self.stop.is_set():
            re.match(r"(a+)+$", "a" * 25 + "b")  # catastrophic backtracking, all in C
            time.sleep(0.5)

    async def close(self):
        self.stop.set()
""",
    "signals": _HEADER
    + """
def ignore(*args):
    pass

class Signals(BaseBackgroundPlugin):
    async def initialize(self):
        signal.signal(signal.SIGTERM, ignore)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, ignore)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        self.addRoute("/red/signals/bypass", self.bypass)

    def bypass(self, request):
        import _signal
        _signal.signal(signal.SIGTERM, _signal.SIG_IGN)  # past the guard: restored within a second
        return pluginHTTPResponse(body="set")
""",
    "stops_loop": _HEADER
    + """
class StopsLoop(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/red/stop/loop", self.stop_loop)
        self.addRoute("/red/stop/hard", self.stop_hard)

    def stop_loop(self, request):
        asyncio.get_running_loop().stop()
        return pluginHTTPResponse(body="stopped?")

    def stop_hard(self, request):
        loop = asyncio.get_running_loop()
        type(loop).stop(loop)  # past the guard on the instance
        return pluginHTTPResponse(body="stopped hard?")
""",
    "stalled_callback": hostile.STALLED_CALLBACK,
}


class EventTraffic:
    """Sends the good counter one ``sending_event`` batch at a time, in a thread, and waits for it
    to be counted before the next: every batch must arrive; the longest time from sending to
    counted is kept (printed, not asserted: a loaded machine may stretch it; so does the GIL hog
    until it is quarantined, which no in-process guard can prevent)."""

    def __init__(self, sidecar: Any) -> None:
        self.sidecar = sidecar
        self.sent = 0
        self.failures: list[str] = []
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            body = {"events": [{"n": self.sent}], "handlerId": "h", "accountId": "a"}
            started = time.monotonic()
            try:
                reply = self.sidecar.post_event("sending_event", body, timeout=15)
            except OSError as exc:
                self.failures.append(f"intake: {exc}")
                continue
            if reply.status != 202:
                self.failures.append(f"intake: HTTP {reply.status}")
                continue
            self.sent += 1
            while not self._stop.is_set():
                try:
                    if counted(self.sidecar)["events"] >= self.sent:
                        break
                except (OSError, AssertionError) as exc:
                    self.failures.append(f"counted: {exc}")
                self._stop.wait(0.02)
            self.longest = max(self.longest, time.monotonic() - started)
            self._stop.wait(0.1)

    def __enter__(self) -> EventTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _json(reply: Any) -> Any:
    assert reply.status == 200, reply.text
    return reply.json()


def test_the_red_teams_plugins_cost_only_themselves(sidecar_factory, tmp_path: Path) -> None:
    active_file = tmp_path / "active.json"
    order = [*GOOD, *HOSTILE]
    active_file.write_text(json.dumps(order))
    sidecar = sidecar_factory(
        plugins={**GOOD, **HOSTILE},
        args=[
            "--active-file",
            str(active_file),
            "--callback-timeout",
            "1",
            "--queue-items",
            "100",
            "--loop-block-budget",
            "2",
            "--shutdown-timeout",
            "10",
        ],
    )
    plugins = sidecar.plugins()
    assert plugins["repeats_variable"]["state"] == "failed"
    assert "names the variable {b} twice" in plugins["repeats_variable"]["error"]
    assert plugins["users"]["state"] == "failed"
    assert "/users/{id} overlaps /{a}/{b} of plugin 'catch_all'" in plugins["users"]["error"]
    assert plugins["catch_all"]["state"] == "running"

    with Traffic(sidecar) as traffic, EventTraffic(sidecar) as events:
        # path variables
        assert sidecar.get("/files/x/report.txt").text == "report.txt"
        for path in ("/files/x/..", "/files/x/%2E%2E", "/files/x/a%2Fb", "/files/x/a%5cb"):
            reply = sidecar.get(path)
            assert reply.status == 404, (path, reply.status, reply.text)

        # fork(): the parent keeps serving, the child never runs the loop, the plugin is named
        for how in ("os", "mp", "thread"):
            assert _json(sidecar.get(f"/red/fork/{how}")) == {"child_exit": 70}, how
        assert _json(sidecar.get("/red/fork/program")) == {"exits": [3, 4]}
        wait_for(
            lambda: sidecar.metric("luna_plugin_contained_total", plugin="forks", what="fork") == 3,
            what="three forks counted against the plugin",
        )
        assert sidecar.get("/hello").text == "hello"

        # loop.stop(): ignored through the loop; survived past it
        assert sidecar.get("/red/stop/loop").text == "stopped?"
        assert sidecar.metric("luna_plugin_contained_total", plugin="stops_loop", what="loop_stop") == 1
        assert sidecar.get("/red/stop/hard").status in (200, 500)
        wait_for(lambda: "the event loop was stopped; the sidecar carries on" in sidecar.log(), what="log")
        assert sidecar.get("/hello").text == "hello"

        # SIGTERM handlers: refused three ways at initialize(), restored when set past the guard
        assert sidecar.metric("luna_plugin_contained_total", plugin="signals", what="signal_handler") == 3
        assert sidecar.get("/red/signals/bypass").text == "set"
        wait_for(
            lambda: (
                sidecar.metric("luna_plugin_contained_total", plugin="unknown", what="signal_handler") >= 1
            ),
            what="the replaced SIGTERM handler restored",
        )

        # the GIL hog is charged and, over its budget, quarantined
        wait_for(
            lambda: sidecar.plugin("gil_hog")["state"] == "failed",
            timeout=120,
            what="the GIL hog quarantined",
        )
        assert "quarantined" in sidecar.plugin("gil_hog")["error"]
        assert sidecar.metric("luna_plugin_reloads_total", plugin="gil_hog", result="quarantined") == 1

        # batches lost: a full queue, then a reload of a stalled plugin
        for _ in range(5):
            body = {
                "points": [{"series": "burst", "eventTime": time.time(), "tags": {}, "fields": {"n": 1}}] * 60
            }
            assert sidecar.post_event("monitoring_event", body).status == 202
        wait_for(lambda: counted(sidecar).get("burst") == 300, what="the good plugin to count 300 points")
        wait_for(
            lambda: (
                sidecar.metric(
                    "luna_plugin_dropped_batches_total", plugin="stalled_callback", reason="queue_full"
                )
                >= 1
            ),
            what="a full queue counted",
        )
        # a new version retires the old one, whose batch in its stuck callback is lost: counted
        old_hash = sidecar.plugin("stalled_callback")["codeHash"]
        sidecar.write_plugin("stalled_callback", hostile.STALLED_CALLBACK + "# version 2\n")
        wait_for(
            lambda: sidecar.plugin("stalled_callback")["codeHash"] not in (None, old_hash),
            timeout=60,
            what="the stalled plugin's new version",
        )
        wait_for(
            lambda: (
                sidecar.metric(
                    "luna_plugin_dropped_batches_total", plugin="stalled_callback", reason="retired"
                )
                >= 1
            ),
            what="the old version's lost batch counted",
        )
        assert sidecar.get("/hello").text == "hello"
        # enough of both kinds of traffic to judge by, however slow the machine is today
        wait_for(
            lambda: events.sent > 10 and traffic.results["hello"] > 10 and traffic.results["counted"] > 10,
            timeout=120,
            what="more than 10 events and route requests while the hostile plugins ran",
        )

    assert traffic.failures == [], traffic.failures[:10]
    assert events.failures == [], events.failures[:10]
    assert events.sent > 10
    wait_for(lambda: counted(sidecar)["events"] == events.sent, what="every event sent counted")
    print(f"events: {events.sent} sent, each counted within {events.longest:.2f} s at the longest")
    assert traffic.results["hello"] > 10 and traffic.results["counted"] > 10
    # SIGTERM still ends the sidecar, whatever the plugins tried
    assert sidecar.stop(signal.SIGTERM, timeout=60) == 0
    log = sidecar.log()
    assert "plugin forks called fork(); the child was ended at once" in log
    assert "plugin signals tried to set a SIGTERM handler; refused" in log

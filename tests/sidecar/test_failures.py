"""A plugin that fails or hangs at any stage costs only itself."""

from __future__ import annotations

import json

import pytest

from tests.support.plugin_sources import (
    HANGS_IN_INITIALIZE,
    SLOW_AND_FAILING_EVENTS,
    failing_at,
    route_plugin,
)
from tests.support.sidecar_harness import points, wait_for

HEALTHY = route_plugin("/healthy", "fine")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def broken(:\n    pass\n", "import: SyntaxError"),
        (
            "import no_such_module_here\n",
            "import: ModuleNotFoundError: No module named 'no_such_module_here'",
        ),
        ("x = 1\n\nraise RuntimeError('at import')\n", "(at "),
        ("import os\n", "classes: no concrete plugin class"),
        (failing_at("construct"), "construct: Broken(app): RuntimeError: boom in construct"),
        (failing_at("initialize"), "initialize: Broken.initialize() raised RuntimeError: boom in initialize"),
        (failing_at("start"), "start: Broken.start() raised RuntimeError: boom in start"),
        (HANGS_IN_INITIALIZE, "initialize: Hangs.initialize() did not finish within 0.5 s"),
    ],
    ids=[
        "syntax",
        "missing-import",
        "raises-at-import",
        "no-plugin-class",
        "construct",
        "initialize",
        "start",
        "hangs",
    ],
)
def test_a_failing_plugin_is_reported_and_the_others_keep_running(sidecar_factory, code, expected) -> None:
    sidecar = sidecar_factory(
        plugins={"healthy": HEALTHY, "broken": code, "after": route_plugin("/after", "also fine")},
        active=["healthy", "broken", "after"],
        args=["--lifecycle-timeout", "0.5"],
    )
    broken = sidecar.plugin("broken")
    assert broken["state"] == "failed"
    assert expected in broken["error"]
    assert broken["routes"] == []
    assert sidecar.get("/broken").status == 404
    assert sidecar.get("/hangs").status == 404
    assert sidecar.get("/healthy").text == "fine"
    assert sidecar.get("/after").text == "also fine"
    assert sidecar.metric("luna_plugins", state="failed") == 1
    assert sidecar.metric("luna_plugins", state="running") == 2
    assert sidecar.metric("luna_plugin_reloads_total", plugin="broken", result="failure") == 1
    assert sidecar.stop() == 0


def test_line_numbers_are_reported_for_errors_at_import(sidecar_factory) -> None:
    sidecar = sidecar_factory(plugins={"broken": "a = 1\nb = 2\nc = a / 0\n"}, active=["broken"])
    error = sidecar.plugin("broken")["error"]
    assert "ZeroDivisionError" in error and "broken.py:3" in error


def test_missing_plugin_file_is_reported(sidecar_factory) -> None:
    sidecar = sidecar_factory(plugins={"healthy": HEALTHY}, active=["healthy", "ghost"])
    ghost = sidecar.plugin("ghost")
    assert ghost["state"] == "failed" and "plugin file not found" in ghost["error"]
    assert sidecar.get("/healthy").status == 200


def test_route_handler_errors_become_5xx_for_that_request_only(sidecar_factory) -> None:
    code = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

async def raises(request):
    raise KeyError("secret detail")

async def slow(request):
    await asyncio.sleep(10)

def not_a_response(request):
    return "just a string"

class Routes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/raises", raises)
        self.addRoute("/slow", slow)
        self.addRoute("/wrong", not_a_response)
        self.addRoute("/ok", lambda request: pluginHTTPResponse(body="ok"))
"""
    sidecar = sidecar_factory(plugins={"routes": code}, active=["routes"], args=["--route-timeout", "0.3"])
    raised = sidecar.get("/raises")
    assert raised.status == 500 and "secret detail" not in raised.text
    assert "routes" in raised.json()["error"]
    assert sidecar.get("/slow").status == 504
    assert sidecar.get("/wrong").status == 500
    assert sidecar.get("/ok").text == "ok"
    assert sidecar.plugin("routes")["state"] == "running"


def test_route_conflict_fails_the_later_plugin(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"first": route_plugin("/same", "first"), "second": route_plugin("/same", "second")},
        active=["first", "second"],
    )
    assert sidecar.plugin("second")["state"] == "failed"
    assert "GET /same is already served by plugin 'first'" in sidecar.plugin("second")["error"]
    assert sidecar.get("/same").text == "first"


def test_slow_and_failing_event_plugins_delay_nobody_else(sidecar_factory, tmp_path) -> None:
    from tests.support.plugin_sources import RECORDER

    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"bad": SLOW_AND_FAILING_EVENTS, "recorder": RECORDER},
        active=["bad", "recorder"],
        settings={"recorder": {"out": str(out)}},
        args=["--queue-items", "8", "--callback-timeout", "1"],
    )
    replies = [sidecar.post_event("monitoring_event", points(2)) for _ in range(8)]
    assert all(reply.status == 202 for reply in replies)
    # Slow takes one batch and queues 3; the other 4 are dropped for it, never for the others.
    assert sum(reply.json()["dropped"] for reply in replies) == 4
    wait_for(
        lambda: out.exists() and sum(len(json.loads(line)) for line in out.read_text().splitlines()) == 16,
        what="recorder to get all 8 batches (16 points; queued batches may arrive merged)",
    )
    failing = wait_for(
        lambda: (
            next(c for c in sidecar.plugin("bad")["classes"] if c["name"] == "Failing")["failed"] == 8
            and sidecar.plugin("bad")
        ),
        what="failing plugin to see all 8 batches",
    )
    classes = {c["name"]: c for c in failing["classes"]}
    assert classes["Failing"]["lastError"] == "ValueError: cannot handle 2"
    assert classes["Slow"]["dropped"] == 4
    assert (
        sidecar.metric("luna_plugin_events_total", plugin="bad", **{"class": "Slow", "outcome": "dropped"})
        == 4
    )
    wait_for(
        lambda: (
            sidecar.metric(
                "luna_plugin_events_total", plugin="bad", **{"class": "Slow", "outcome": "timeout"}
            )
            >= 1
        ),
        what="the slow callback to time out",
    )
    assert sidecar.plugin("bad")["state"] == "running"

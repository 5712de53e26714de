"""Time a plugin blocks the event loop is charged to it, and may get it quarantined.

Real sidecar processes: a route handler and a callback call ``time.sleep``; the watchdog thread
sees the loop stand still, finds the plugin on the loop thread's stack and charges it.
"""

from __future__ import annotations

import signal

from tests.support import hostile_plugins as hostile
from tests.support.plugin_sources import route_plugin
from tests.support.sidecar_harness import points, wait_for

#: the plugin's code sits in a helper module next to it: still charged to the plugin
SLEEPS_IN_A_HELPER = """
import sleepy_helper
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

def doze(request):
    sleepy_helper.doze(0.6)
    return pluginHTTPResponse(body="dozed")

class Dozes(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/doze", doze)
"""

HELPER = "import time\n\ndef doze(seconds):\n    time.sleep(seconds)\n"


def blocked(sidecar, plugin: str) -> float:
    return sidecar.metric("luna_plugin_loop_blocked_seconds_total", plugin=plugin)


def test_blocked_loop_time_is_charged_to_the_plugin_on_the_stack(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={
            "healthy": route_plugin("/healthy", "fine"),
            "sleeps_in_route": hostile.SLEEPS_IN_ROUTE,
            "sleeps_in_callback": hostile.SLEEPS_IN_CALLBACK,
            "dozes": SLEEPS_IN_A_HELPER,
            "sleepy_helper": HELPER,
        },
        active=["healthy", "sleeps_in_route", "sleeps_in_callback", "dozes"],
        args=["--loop-block-threshold", "0.1"],
    )
    for _ in range(2):
        assert sidecar.get("/snooze?seconds=0.6").text == "yawn"
    assert sidecar.get("/doze").text == "dozed"
    assert sidecar.post_event("monitoring_event", points(1)).status == 202
    wait_for(lambda: blocked(sidecar, "sleeps_in_callback") > 0, what="the callback's sleep charged")
    wait_for(lambda: blocked(sidecar, "sleeps_in_route") >= 1.0, what="the route's sleeps charged")
    wait_for(lambda: blocked(sidecar, "dozes") >= 0.4, what="the helper's sleep charged to its plugin")
    # (a machine so loaded that it pauses the whole process could charge a stray tick)
    assert blocked(sidecar, "healthy") < 0.3
    assert sidecar.series_of("sleepy_helper") == set(), "a helper module is not a plugin"
    # the plugin's own entry and the loop's total say the same
    assert sidecar.plugin("sleeps_in_route")["loopBlockedSeconds"] >= 1.0
    assert sidecar.plugin("healthy")["loopBlockedSeconds"] < 0.3
    total = sidecar.metric("luna_event_loop_blocked_seconds_total")
    assert total >= blocked(sidecar, "sleeps_in_route") + blocked(sidecar, "dozes")
    assert "the event loop was blocked for" in sidecar.log() and "sleeps_in_route" in sidecar.log()
    assert sidecar.plugin("sleeps_in_route")["state"] == "running", "no budget: no quarantine"


def test_a_plugin_over_its_blocking_budget_is_quarantined_until_sighup(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"healthy": route_plugin("/healthy", "fine"), "sleeps_in_route": hostile.SLEEPS_IN_ROUTE},
        active=["healthy", "sleeps_in_route"],
        args=["--loop-block-threshold", "0.1", "--loop-block-budget", "1"],
    )
    assert sidecar.get("/snooze?seconds=0.6").text == "yawn"
    assert sidecar.plugin("sleeps_in_route")["state"] == "running", "0.6 s is within the budget"
    assert sidecar.get("/snooze?seconds=0.6").text == "yawn"
    wait_for(lambda: sidecar.plugin("sleeps_in_route")["state"] == "failed", what="the quarantine")
    plugin = sidecar.plugin("sleeps_in_route")
    assert plugin["error"].startswith("quarantined: blocked the event loop for ")
    assert "in the last minute" in plugin["error"]
    assert plugin["routes"] == [] and sidecar.get("/snooze").status == 404
    assert sidecar.get("/healthy").text == "fine"
    assert sidecar.metric("luna_plugin_reloads_total", plugin="sleeps_in_route", result="quarantined") == 1

    # it stays out (no reload of the same code), until SIGHUP retries it with a fresh budget
    sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: sidecar.plugin("sleeps_in_route")["state"] == "running", what="the retry")
    assert sidecar.get("/snooze?seconds=0").text == "yawn"

"""Unloading a plugin removes its metric series; loading it again starts them afresh.

Real sidecar process, real scrapes of ``/metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.plugin_sources import route_plugin
from tests.support.sidecar_harness import points, wait_for

BOTH = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_plugins.base.plugins_meta.base_plugins import pluginHTTPResponse

class Listens(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        if any(point.series == "fail" for point in points):
            raise ValueError("failing on purpose")

class Serves(BaseBackgroundPlugin):
    async def initialize(self):
        self.addRoute("/both", lambda request: pluginHTTPResponse(body="both"))
"""

PER_PLUGIN = {
    "luna_plugin_events_total",
    "luna_plugin_callback_duration_seconds_bucket",
    "luna_plugin_callback_duration_seconds_count",
    "luna_plugin_callback_duration_seconds_sum",
    "luna_plugin_reloads_total",
    "luna_plugin_route_requests_total",
    "luna_plugin_info",
    "luna_plugin_queue_depth",
    "luna_plugin_queue_items",
    "luna_plugin_loop_blocked_seconds_total",
}


def test_unloading_a_plugin_removes_its_series(sidecar_factory, tmp_path: Path) -> None:
    active = tmp_path / "active.json"
    active.write_text(json.dumps(["both", "other"]))
    sidecar = sidecar_factory(
        plugins={"both": BOTH, "other": route_plugin("/other", "other")},
        args=["--active-file", str(active), "--loop-block-threshold", "0.05"],
    )
    assert sidecar.get("/both").text == "both"
    assert sidecar.post_event("monitoring_event", points(2, series="fail")).status == 202
    wait_for(
        lambda: sidecar.metric("luna_plugin_events_total", plugin="both", outcome="failed") >= 1,
        what="a failure",
    )
    # a version that blocks the loop a little, so the blocked-time series exists too
    first = sidecar.plugin("both")["codeHash"]
    sidecar.write_plugin("both", BOTH.replace('body="both"', 'body=__import__("time").sleep(0.2) or "both"'))
    wait_for(lambda: sidecar.plugin("both")["codeHash"] != first, what="the blocking version")
    assert sidecar.get("/both").text == "both"
    wait_for(
        lambda: sidecar.metric("luna_plugin_loop_blocked_seconds_total", plugin="both") > 0,
        what="the blocking charged",
    )
    assert sidecar.series_of("both") >= PER_PLUGIN
    other = sidecar.series_of("other")

    active.write_text(json.dumps(["other"]))
    wait_for(lambda: "both" not in sidecar.plugins(), what="the unload")
    assert sidecar.series_of("both") == set()
    assert sidecar.series_of("other") == other, "the other plugin's series stay"

    # loaded again: its series start from zero, route requests included
    active.write_text(json.dumps(["other", "both"]))
    wait_for(lambda: sidecar.get("/both").status == 200, what="the plugin back")
    wait_for(
        lambda: sidecar.metric("luna_plugin_route_requests_total", plugin="both", status_code="200") >= 1,
        what="its route requests counted again",
    )
    assert sidecar.metric("luna_plugin_reloads_total", plugin="both", result="success") == 1
    assert sidecar.metric("luna_plugin_events_total", plugin="both", outcome="failed") == 0

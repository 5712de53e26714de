"""The task following the desired state never silently stops.

Plugins share the process, so plugin code can end the sidecar's own tasks; here one cancels the
feed's task (once, or over and over). Real sidecar processes: the feed is restarted with
backoff and reloads go on; when it cannot stay up, ``/healthz`` fails so the kubelet restarts
the container.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.plugin_sources import route_plugin
from tests.support.sidecar_harness import http, wait_for

FEED_KILLER = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin

class FeedKiller(BaseBackgroundPlugin):
    async def start(self):
        self.task = asyncio.create_task(self.kill())

    async def kill(self):
        while True:
            await asyncio.sleep(0.1)
            victims = [t for t in asyncio.all_tasks() if t.get_name().startswith("luna-feed")]
            for task in victims:
                task.cancel()
            if victims and self.settings.get("once"):
                return
"""


def test_a_feed_ended_by_plugin_code_is_restarted_and_reloads_go_on(sidecar_factory, tmp_path: Path) -> None:
    active = tmp_path / "active.json"
    active.write_text(json.dumps(["killer", "healthy"]))
    sidecar = sidecar_factory(
        plugins={"killer": FEED_KILLER, "healthy": route_plugin("/healthy", "fine")},
        settings={"killer": {"once": True}},
        args=["--active-file", str(active)],
    )
    wait_for(lambda: "luna-feed-directory stopped (it was cancelled" in sidecar.log(), what="the feed killed")
    assert "restarting it in 0.5 s" in sidecar.log()
    wait_for(lambda: sidecar.metric("luna_desired_state_feed_restarts_total") == 1, what="the restart count")

    # changes made while it was down or after are applied: the feed is back
    sidecar.write_plugin("later", route_plugin("/later", "arrived"))
    active.write_text(json.dumps(["killer", "healthy", "later"]))
    wait_for(lambda: sidecar.get("/later").status == 200, what="the change to be applied")
    assert sidecar.get("/later").text == "arrived"
    assert http("GET", sidecar.metrics_url + "/healthz").status == 200
    assert sidecar.stop() == 0


def test_liveness_fails_when_the_feed_cannot_stay_up(sidecar_factory) -> None:
    sidecar = sidecar_factory(
        plugins={"killer": FEED_KILLER, "healthy": route_plugin("/healthy", "fine")},
        active=["killer", "healthy"],
        args=["--api-timeout", "2"],
    )
    reply = wait_for(
        lambda: (r := http("GET", sidecar.metrics_url + "/healthz")).status == 503 and r,
        timeout=30,
        what="/healthz to fail",
    )
    assert "luna-feed-directory keeps failing" in reply.text and "limit 2 s" in reply.text
    assert sidecar.metric("luna_desired_state_feed_restarts_total") >= 2
    assert sidecar.get("/healthy").text == "fine", "the plugins keep serving meanwhile"
    assert http("GET", sidecar.metrics_url + "/readyz").status == 200

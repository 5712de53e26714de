"""The sidecar process's ``--log-format json`` lines (every line parsed back, with its fields) and
its ``luna_build_info`` on ``/metrics``; a bad format stops the start naming the flag."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from importlib import metadata

from tests.support.json_logs import json_lines
from tests.support.sidecar_harness import Sidecar, sidecar_command, wait_for

GREETER = """
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin

class Greeter(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        logger.info("got %d point(s)", len(points))
"""


def test_json_lines_with_every_field_and_the_plugin_named(sidecar_factory: Callable[..., Sidecar]) -> None:
    sidecar = sidecar_factory(plugins={"greeter": GREETER}, active=["greeter"], args=["--log-format", "json"])
    point = {
        "series": "requests",
        "eventTime": 1_700_000_000.0,
        "tags": {"route": "GET:/a"},
        "fields": {"n": 1},
    }
    assert sidecar.post_event("monitoring_event", {"points": [point]}).status == 202
    wait_for(lambda: "got 1 point(s)" in sidecar.log(), what="the plugin's log line")
    assert sidecar.stop() == 0
    records = json_lines(sidecar.log())
    (own,) = [r for r in records if r["message"] == "got 1 point(s)"]
    assert (own["level"], own["logger"], own["plugin"]) == ("INFO", "luna.plugins.greeter", "greeter")
    assert any(r["logger"].startswith("luna") and r["plugin"] is None for r in records)  # the runtime's own


def test_build_info_on_metrics(sidecar_factory: Callable[..., Sidecar]) -> None:
    sidecar = sidecar_factory()
    labels = {
        "component": "sidecar",
        "version": metadata.version("luna-plugins"),
        "python_version": platform.python_version(),
    }
    assert sidecar.metric("luna_build_info", **labels) == 1
    assert "# TYPE luna_build_info gauge" in sidecar.metrics_text()


def test_a_bad_log_format_stops_the_start_naming_the_flag() -> None:
    result = subprocess.run(
        [*sidecar_command(), "sidecar", "--plugins-dir", ".", "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--log-format='xml'" in result.stderr and "text, json" in result.stderr

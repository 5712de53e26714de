"""Hot reload: only what changed is reloaded, new before old, and a broken update changes nothing."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tests.support.plugin_sources import RECORDER, route_plugin
from tests.support.sidecar_harness import http, wait_for

LIFECYCLE_LOG = """
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

VERSION = {version!r}

class Versioned(BaseBackgroundPlugin):
    def log(self, what):
        with open(self.settings["out"], "a") as out:
            out.write(f"{{what}} {{VERSION}}\\n")

    async def initialize(self):
        self.log("initialize")
        self.addRoute("/version", lambda request: pluginHTTPResponse(body=VERSION))

    async def close(self):
        self.log("close")
"""


def lifecycle(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_changed_file_reloads_new_before_old_and_others_untouched(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "lifecycle.log"
    sidecar = sidecar_factory(
        plugins={"versioned": LIFECYCLE_LOG.format(version="v1"), "other": route_plugin("/other", "same")},
        active=["versioned", "other"],
        settings={"versioned": {"out": str(out)}},
    )
    other_hash = sidecar.plugin("other")["codeHash"]
    assert sidecar.get("/version").text == "v1"
    sidecar.write_plugin("versioned", LIFECYCLE_LOG.format(version="v2"))
    wait_for(lambda: sidecar.get("/version").text == "v2", what="v2 to serve")
    wait_for(lambda: "close v1" in lifecycle(out), what="v1 to be closed")
    assert lifecycle(out) == ["initialize v1", "initialize v2", "close v1"]
    assert sidecar.plugin("other")["codeHash"] == other_hash
    assert sidecar.metric("luna_plugin_reloads_total", plugin="other", result="success") == 1
    assert sidecar.metric("luna_plugin_reloads_total", plugin="versioned", result="success") == 2


def test_broken_update_keeps_the_old_version_serving(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "lifecycle.log"
    sidecar = sidecar_factory(
        plugins={"versioned": LIFECYCLE_LOG.format(version="v1")},
        active=["versioned"],
        settings={"versioned": {"out": str(out)}},
    )
    good_hash = sidecar.plugin("versioned")["codeHash"]
    sidecar.write_plugin("versioned", "def broken(:\n")
    plugin = wait_for(
        lambda: (p := sidecar.plugin("versioned"))["failedCodeHash"] and p,
        what="the failed version to be reported",
    )
    assert plugin["state"] == "running" and plugin["codeHash"] == good_hash
    assert "SyntaxError" in plugin["error"]
    assert sidecar.get("/version").text == "v1"
    # fixing the file again clears the failure
    sidecar.write_plugin("versioned", LIFECYCLE_LOG.format(version="v3"))
    wait_for(lambda: sidecar.get("/version").text == "v3", what="v3 to serve")
    plugin = sidecar.plugin("versioned")
    assert plugin["failedCodeHash"] is None and plugin["error"] is None


def test_active_file_adds_removes_and_sighup_retries(sidecar_factory, tmp_path: Path) -> None:
    active_file = tmp_path / "active.json"
    active_file.write_text('["a"]')
    flaky = tmp_path / "flaky-ok"
    flaky_code = f"""
import os
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Flaky(BaseBackgroundPlugin):
    async def initialize(self):
        if not os.path.exists({str(flaky)!r}):
            raise RuntimeError("dependency not ready")
        self.addRoute("/flaky", lambda request: pluginHTTPResponse(body="up"))
"""
    sidecar = sidecar_factory(
        plugins={"a": route_plugin("/a", "A"), "b": route_plugin("/b", "B"), "flaky": flaky_code},
        args=["--active-file", str(active_file)],
    )
    assert list(sidecar.plugins()) == ["a"]
    active_file.write_text('["b", "a", "flaky"]')
    wait_for(lambda: list(sidecar.plugins()) == ["b", "a", "flaky"], what="b and flaky to be added")
    assert sidecar.get("/b").text == "B"
    assert sidecar.plugin("flaky")["state"] == "failed"
    active_file.write_text("b")
    wait_for(lambda: sidecar.get("/a").status == 404, what="a's route to go away")
    assert list(sidecar.plugins()) == ["b"]
    # SIGHUP retries a version that failed (its code did not change)
    active_file.write_text("b,flaky")
    wait_for(lambda: "flaky" in sidecar.plugins(), what="flaky to be tried again")
    flaky.write_text("ok")
    sidecar.process.send_signal(signal.SIGHUP)
    wait_for(lambda: sidecar.get("/flaky").text == "up", what="flaky to load after SIGHUP")
    # an unusable active list keeps what runs
    active_file.write_text('["not a module name!"]')
    wait_for(lambda: "active list unusable" in sidecar.log(), what="the bad list to be reported")
    assert sidecar.get("/b").text == "B"


def test_a_burst_of_changes_is_one_reload(sidecar_factory, tmp_path: Path) -> None:
    sidecar = sidecar_factory(
        plugins={"burst": route_plugin("/burst", "0")}, active=["burst"], args=["--reload-debounce", "0.5"]
    )
    stop = threading.Event()

    def writer() -> None:
        for index in range(1, 11):
            sidecar.write_plugin("burst", route_plugin("/burst", str(index)))
            stop.wait(0.05)  # ten writes, 50 ms apart: well inside the debounce window

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join()
    wait_for(lambda: sidecar.get("/burst").text == "10", what="the last version to serve")
    assert (
        sidecar.metric("luna_plugin_reloads_total", plugin="burst", result="success") == 2
    )  # load + 1 reload


def test_routes_keep_answering_during_a_reload(sidecar_factory, tmp_path: Path) -> None:
    slow_init = """
import asyncio
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse

class Slow(BaseBackgroundPlugin):
    async def initialize(self):
        await asyncio.sleep(1.0)
        self.addRoute("/swap", lambda request: pluginHTTPResponse(body={version!r}))
"""
    sidecar = sidecar_factory(plugins={"swap": slow_init.format(version="old")}, active=["swap"])
    sidecar.write_plugin("swap", slow_init.format(version="new"))
    seen: list[tuple[int, str]] = []
    deadline_hit = wait_for(
        lambda: (
            (reply := http("GET", sidecar.public + "/swap"), seen.append((reply.status, reply.text)))
            and reply.text == "new"
        ),
        timeout=15,
        what="the new version to answer",
    )
    assert deadline_hit
    assert {status for status, _ in seen} == {200}, seen
    assert seen[0][1] == "old"


def test_settings_file_change_reloads_the_plugin(sidecar_factory, tmp_path: Path) -> None:
    out1, out2 = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER}, active=["recorder"], settings={"recorder": {"out": str(out1)}}
    )
    (sidecar.plugins_dir / "recorder.settings.json").write_text(f'{{"out": "{out2}"}}')
    wait_for(
        lambda: sidecar.metric("luna_plugin_reloads_total", plugin="recorder", result="success") == 2,
        what="the settings change to reload the plugin",
    )
    sidecar.post_event("monitoring_event", {"points": [{"series": "s", "eventTime": 1}]})
    wait_for(out2.exists, what="the new settings to be used")

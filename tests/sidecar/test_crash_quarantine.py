"""A plugin version that takes the whole process down while it loads is quarantined at the next
start, and stays so across restarts until its code changes (issue: hardening)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support import hostile_plugins as hostile
from tests.support.sidecar_harness import wait_for

CRASHES = {
    "exits_hard_at_import": "import os\nos._exit(3)\n",
    # a crash in C code: the process dies of SIGSEGV in the middle of initialize()
    "segfaults_in_initialize": (
        "import ctypes\n"
        "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin\n"
        "class Crash(BaseBackgroundPlugin):\n"
        "    async def initialize(self):\n"
        "        ctypes.string_at(0)\n"
    ),
}

FIXED = (
    "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, pluginHTTPResponse\n"
    "class Fixed(BaseBackgroundPlugin):\n"
    "    async def initialize(self):\n"
    "        self.addRoute('/fixed', lambda request: pluginHTTPResponse(body='fixed'))\n"
)


@pytest.mark.parametrize(
    ("name", "exit_code"), [("exits_hard_at_import", 3), ("segfaults_in_initialize", -11)]
)
def test_a_version_that_crashed_the_sidecar_while_loading_is_quarantined_at_the_next_start(
    sidecar_factory, tmp_path: Path, name: str, exit_code: int
) -> None:
    state = tmp_path / "state"
    plugins = {"good_routes": hostile.GOOD_ROUTES, name: CRASHES[name]}
    args = ["--state-dir", str(state)]
    first = sidecar_factory(plugins=plugins, active=["good_routes", name], args=args, wait_ready=False)
    assert first.process.wait(timeout=60) == exit_code, first.log()[-2000:]

    # the container restarts: the crasher is quarantined, everything else serves
    for _ in range(2):  # and it stays quarantined across restarts
        again = sidecar_factory(plugins=plugins, active=["good_routes", name], args=args)
        crashed = again.plugin(name)
        assert crashed["state"] == "failed", crashed
        assert "quarantined: the sidecar process exited while loading this version" in crashed["error"]
        assert again.get("/hello").text == "hello"
        assert again.metric("luna_plugin_reloads_total", plugin=name, result="failure") == 1
        assert again.stop(signal.SIGTERM) == 0

    # new code for the module is tried again
    fixed = sidecar_factory(plugins={**plugins, name: FIXED}, active=["good_routes", name], args=args)
    assert fixed.plugin(name)["state"] == "running"
    assert fixed.get("/fixed").text == "fixed"
    # and a hot reload to the crashing code takes the process down once more: a hard crash cannot
    # be contained in-process, only kept from repeating
    fixed.write_plugin(name, CRASHES[name])
    wait_for(lambda: fixed.process.poll() is not None, timeout=60, what="the crash on reload")
    last = sidecar_factory(plugins=plugins, active=["good_routes", name], args=args)
    assert "quarantined" in last.plugin(name)["error"]

"""One plugin version from import to close."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
import types
from collections.abc import Callable

import pytest

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin
from luna_sidecar.engine.lifecycle import close_instances, load_version, plugin_logger
from luna_sidecar.engine.loader import PluginLoadError
from luna_sidecar.isolation.leftovers import Leftovers
from tests.support.runtime import source

TIMEOUT = 0.2


def plugin_code(recorder: types.ModuleType, body: str) -> str:
    return (
        "import asyncio\n"
        f"import {recorder.__name__} as rec\n"
        "from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin\n"
        + textwrap.dedent(body)
    )


TWO_PLUGINS = """
class Background(BaseBackgroundPlugin):
    def __init__(self, app):
        super().__init__(app)
        rec.events.append(("init", "Background", dict(self.settings)))

    async def initialize(self):
        rec.events.append(("initialize", "Background"))
        self.addRoute("/bg", lambda request: None)

    async def start(self):
        rec.events.append(("start", "Background"))

    async def close(self):
        rec.events.append(("close", "Background"))


class Listener(BaseEventPlugin):
    eventName = "monitoring_event"

    def __init__(self, app):
        super().__init__(app)
        rec.events.append(("init", "Listener", dict(self.settings)))

    async def initialize(self):
        rec.events.append(("initialize", "Listener"))

    async def handleEvent(self, points, logger):
        pass

    async def close(self):
        rec.events.append(("close", "Listener"))
"""


async def test_load_version_builds_initializes_then_starts(
    app: LunaApplication, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    name = module_name("two")
    version = await load_version(
        source(name, plugin_code(recorder, TWO_PLUGINS), {"k": [1]}),
        app=app,
        timeout=TIMEOUT,
        leftovers=Leftovers(),
    )
    assert recorder.events == [
        ("init", "Background", {"k": (1,)}),
        ("init", "Listener", {"k": (1,)}),
        ("initialize", "Background"),
        ("initialize", "Listener"),
        ("start", "Background"),
    ]
    assert [type(instance).__name__ for instance in version.instances] == ["Background", "Listener"]
    assert all(instance.app is app for instance in version.instances)
    assert [type(p).__name__ for p in version.background_plugins] == ["Background"]
    assert [type(p).__name__ for p in version.event_plugins] == ["Listener"]
    assert [spec.path for spec in version.routes()] == ["/bg"]
    assert version.logger is plugin_logger(name)
    assert version.logger.name == f"luna.plugins.{name}"
    assert version.module.__name__ == name
    assert version.loaded_at <= time.time()


@pytest.mark.parametrize(
    ("body", "stage", "message"),
    [
        (
            """
            class Broken(BaseBackgroundPlugin):
                def __init__(self, app):
                    super().__init__(app)
                    raise KeyError("missing")
            """,
            "construct",
            "Broken(app): KeyError: 'missing' (at <{name}.py>:",
        ),
        (
            """
            class Broken(BaseBackgroundPlugin):
                async def initialize(self):
                    raise RuntimeError("no database")
                async def close(self):
                    rec.events.append("closed")
            """,
            "initialize",
            "Broken.initialize() raised RuntimeError: no database (at <{name}.py>:",
        ),
        (
            """
            class Broken(BaseBackgroundPlugin):
                async def initialize(self):
                    await asyncio.Event().wait()
                async def close(self):
                    rec.events.append("closed")
            """,
            "initialize",
            "Broken.initialize() did not finish within 0.2 s",
        ),
        (
            """
            class Broken(BaseBackgroundPlugin):
                async def start(self):
                    await asyncio.sleep(30)
                async def close(self):
                    rec.events.append("closed")
            """,
            "start",
            "Broken.start() did not finish within 0.2 s",
        ),
    ],
)
async def test_lifecycle_failures(
    app: LunaApplication,
    recorder: types.ModuleType,
    module_name: Callable[[str], str],
    body: str,
    stage: str,
    message: str,
) -> None:
    name = module_name("broken")
    started = time.monotonic()
    with pytest.raises(PluginLoadError) as caught:
        await load_version(
            source(name, plugin_code(recorder, body)), app=app, timeout=TIMEOUT, leftovers=Leftovers()
        )
    assert time.monotonic() - started < 2.0
    assert caught.value.stage == stage
    assert caught.value.message.startswith(message.format(name=name))
    if stage != "construct":
        assert recorder.events == ["closed"], "what was built is closed again"


async def test_failure_closes_every_instance_already_built(
    app: LunaApplication, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    body = """
    class First(BaseBackgroundPlugin):
        async def close(self):
            rec.events.append("First.close")

    class Second(BaseBackgroundPlugin):
        async def initialize(self):
            raise ValueError("second fails")
        async def close(self):
            rec.events.append("Second.close")
    """
    with pytest.raises(PluginLoadError, match=r"Second\.initialize"):
        await load_version(
            source(module_name("pair"), plugin_code(recorder, body)),
            app=app,
            timeout=TIMEOUT,
            leftovers=Leftovers(),
        )
    assert recorder.events == ["Second.close", "First.close"]


async def test_import_and_class_errors_come_through(
    app: LunaApplication, module_name: Callable[[str], str]
) -> None:
    with pytest.raises(PluginLoadError) as caught:
        await load_version(
            source(module_name("imp"), "raise ImportError('x')\n"),
            app=app,
            timeout=TIMEOUT,
            leftovers=Leftovers(),
        )
    assert caught.value.stage == "import"
    with pytest.raises(PluginLoadError) as caught:
        await load_version(
            source(module_name("none"), "X = 1\n"), app=app, timeout=TIMEOUT, leftovers=Leftovers()
        )
    assert caught.value.stage == "classes"


async def test_close_instances_reports_problems_and_never_raises(
    app: LunaApplication, caplog: pytest.LogCaptureFixture
) -> None:
    order: list[str] = []

    class Fine(BaseBackgroundPlugin):
        async def close(self) -> None:
            order.append("Fine")

    class Raises(BaseBackgroundPlugin):
        async def close(self) -> None:
            order.append("Raises")
            raise OSError("socket gone")

    class Hangs(BaseEventPlugin):
        eventName = "monitoring_event"

        async def handleEvent(self, *args: object) -> None:
            pass

        async def close(self) -> None:
            order.append("Hangs")
            await asyncio.Event().wait()

    logger = logging.getLogger("luna.tests.unit.close")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        problems = await close_instances(
            [Fine(app), Raises(app), Hangs(app)],
            timeout=0.05,
            logger=logger,
            leftovers=Leftovers(),
            source=source("unit_close", ""),
        )
    assert order == ["Hangs", "Raises", "Fine"]
    assert problems == [
        "Hangs.close() did not finish within 0.05 s",
        "Raises.close() raised OSError: socket gone",
    ]
    assert [record.getMessage() for record in caplog.records] == [f"close: {problem}" for problem in problems]

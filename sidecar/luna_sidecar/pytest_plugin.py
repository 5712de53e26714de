"""The pytest plugin of luna-plugins (entry point ``pytest11``): the ``luna_plugin`` fixture.

Installed with luna-plugins, pytest loads it by itself. A test asks for ``luna_plugin`` and loads
a plugin file with it; the plugin runs in the real runtime (:func:`luna_sidecar.testing.run_plugin`,
same arguments) on an event loop of the fixture's own, so plain synchronous tests need no
plugin for async tests::

    def test_counts(luna_plugin):
        plugin = luna_plugin("route_tally.py", settings={"series": "requests"})
        delivery = plugin.send_points([...])
        assert delivery.handled == 1
        assert "counted" in plugin.log_text()

Each call loads one more plugin; all are stopped (as at a sidecar's shutdown) when the test ends.
A path that is not absolute is taken relative to the test file's folder. Async tests use
``run_plugin`` directly. Loading this module imports nothing of the runtime; the fixture does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from luna_plugins.monitoring import MonitoringPoint
    from luna_sidecar.testing import Delivery, PluginHarness, Reply

T = TypeVar("T")


class LoadedPlugin:
    """A plugin loaded by the ``luna_plugin`` fixture: :class:`~luna_sidecar.testing.PluginHarness`'s
    methods, each run to its end on the fixture's loop (the same arguments, the same results and
    errors). ``harness`` is the harness itself."""

    def __init__(self, harness: PluginHarness, loop: asyncio.AbstractEventLoop) -> None:
        self.harness = harness
        self._loop = loop

    def _run(self, step: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(step)

    def send_points(self, points: Iterable[MonitoringPoint | Mapping[str, Any]]) -> Delivery:
        """Send monitoring points through the intake and wait for the plugin to handle them."""
        return self._run(self.harness.send_points(points))

    def send_events(self, events: Iterable[Mapping[str, Any]], **metadata: Any) -> Delivery:
        """Send a ``sending_event`` body (``handler_id``, ``request_id``, ... as keywords)."""
        return self._run(self.harness.send_events(events, **metadata))

    def post_event(self, event_name: str, body: Any) -> Reply:
        """POST ``body`` to the intake as the service would; the intake's answer."""
        return self._run(self.harness.post_event(event_name, body))

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        """Call one of the plugin's routes; the answer."""
        return self._run(self.harness.request(method, path, **kwargs))

    def wait(self, seconds: float) -> None:
        """Let the loop (and a background plugin's tasks) run for ``seconds``."""
        self._run(asyncio.sleep(seconds))

    def log_text(self) -> str:
        """Everything the plugin and the runtime logged about it so far, one line per record."""
        return self.harness.log_text()

    @property
    def logs(self) -> list[str]:
        """The records logged so far as ``LEVEL logger: message`` lines."""
        return self.harness.logs

    def describe(self) -> dict[str, Any]:
        """The plugin as the sidecar's ``GET /plugins`` shows it."""
        return self.harness.describe()


class PluginLoader:
    """What the ``luna_plugin`` fixture gives a test: call it to load a plugin file."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._loop = asyncio.new_event_loop()
        self._stack = contextlib.AsyncExitStack()

    def __call__(self, path: str | Path, **options: Any) -> LoadedPlugin:
        """Load ``path`` with :func:`~luna_sidecar.testing.run_plugin`'s ``options``; raises what
        it raises (e.g. ``PluginNotLoadedError`` with the runtime's reason)."""
        from luna_sidecar.testing import run_plugin

        file = Path(path)
        if not file.is_absolute():
            file = self._folder / file
        harness = self._loop.run_until_complete(self._stack.enter_async_context(run_plugin(file, **options)))
        return LoadedPlugin(harness, self._loop)

    def close(self) -> None:
        """Stop every plugin loaded, then close the loop."""
        try:
            self._loop.run_until_complete(self._stack.aclose())
        finally:
            self._loop.close()


@pytest.fixture
def luna_plugin(request: pytest.FixtureRequest) -> Iterator[PluginLoader]:
    """Loads plugin files into the real runtime for this test (see the module doc)."""
    loader = PluginLoader(Path(request.path).parent)
    try:
        yield loader
    finally:
        loader.close()

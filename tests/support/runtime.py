"""Fixtures and helpers of the in-process tests: fresh metric registries and an in-process runtime
(a pytest plugin, loaded for every test folder by ``tests/conftest.py``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from luna_plugins.application import LunaApplication
from luna_sidecar.desired.sources import PluginSource
from luna_sidecar.engine.bus import EventBus
from luna_sidecar.engine.routing import RouteTable
from luna_sidecar.engine.runtime import Runtime, RuntimeLimits
from luna_sidecar.observability.mapping import PointMetrics
from luna_sidecar.observability.metrics import RuntimeMetrics

_counter = itertools.count()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def runtime_metrics(registry: CollectorRegistry) -> RuntimeMetrics:
    return RuntimeMetrics(registry)


@pytest.fixture
def app() -> LunaApplication:
    return LunaApplication("handlers", logger=logging.getLogger("luna.tests.unit"))


@pytest.fixture
def module_name() -> Iterator[Callable[[str], str]]:
    """Unique plugin module names; whatever they left in ``sys.modules`` is removed afterwards."""
    made: list[str] = []

    def make(stem: str = "plugin") -> str:
        name = f"unit_{stem}_{next(_counter)}"
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


def source(module: str, code: str, settings: dict[str, Any] | None = None) -> PluginSource:
    """A plugin version given as code (no file on disk)."""
    return PluginSource(module, code.encode(), f"<{module}.py>", settings or {})


def metric_value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample value, 0.0 when the sample does not exist (yet)."""
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def wait_until(condition: Callable[[], Any], *, timeout: float = 2.0, what: str = "condition") -> Any:
    """Poll ``condition`` on the event loop until it is truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(0.005)


class RuntimeKit:
    """A runtime with its bus, routes and metrics, built around a fresh registry."""

    def __init__(self, app: LunaApplication, registry: CollectorRegistry, limits: RuntimeLimits) -> None:
        self.registry = registry
        self.metrics = RuntimeMetrics(registry)
        self.point_metrics = PointMetrics(
            overflow_counter=self.metrics.label_overflow,
            error_counter=self.metrics.point_errors,
            max_label_sets=100,
        )
        self.bus = EventBus(self.point_metrics)
        self.routes = RouteTable()
        self.runtime = Runtime(app=app, bus=self.bus, routes=self.routes, metrics=self.metrics, limits=limits)

    def slot(self, module: str) -> dict[str, Any]:
        for entry in self.runtime.describe():
            if entry["name"] == module:
                return entry
        raise AssertionError(f"no slot {module!r} in {[e['name'] for e in self.runtime.describe()]}")

    def instances(self, module: str) -> list[Any]:
        for slot in self.runtime.slots:
            if slot.module == module and slot.current is not None:
                return slot.current.instances
        return []


@pytest.fixture
async def make_runtime(
    app: LunaApplication,
) -> Any:
    """Build runtimes with small timeouts; every one is shut down at the end of the test."""
    kits: list[RuntimeKit] = []

    def make(**limits: Any) -> RuntimeKit:
        values = {"queue_items": 10, "callback_timeout": 0.5, "lifecycle_timeout": 0.5} | limits
        kit = RuntimeKit(app, CollectorRegistry(), RuntimeLimits(**values))
        kits.append(kit)
        return kit

    yield make
    for kit in kits:
        await kit.runtime.shutdown(time.monotonic() + 1.0)


@pytest.fixture
def recorder(module_name: Callable[[str], str]) -> types.ModuleType:
    """An importable module with an ``events`` list that plugin code appends to
    (``import <recorder.__name__> as rec; rec.events.append(...)``)."""
    name = module_name("recorder")
    module = types.ModuleType(name)
    module.events = []  # type: ignore[attr-defined]
    sys.modules[name] = module
    return module

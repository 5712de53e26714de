"""One loaded version of one plugin module, from import to close.

:func:`load_version` imports the code and makes one instance per plugin class, each in a thread
of its own under the lifecycle timeout (a plugin that blocks there stalls nothing else); then
awaits ``initialize()`` and ``start()`` of background plugins on the event loop, each under the
same timeout. A failure at any step, whatever the plugin raised, closes what was already built
and raises :class:`PluginLoadError`, so a broken version never reaches the route table or the
event queues. Work that outlives its timeout is abandoned and reported (``leftovers``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from luna_plugins.application import LunaApplication, RouteRegistrar
from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
    RouteSpec,
)
from luna_plugins.settings import constructing_with, freeze
from luna_sidecar.desired import PluginSource
from luna_sidecar.engine.loader import (
    MODULES,
    PluginLoadError,
    describe_exception,
    import_module,
    plugin_classes,
)
from luna_sidecar.isolation import Leftovers, call_with_timeout, run_in_thread
from luna_sidecar.process import IsolatedPlugin

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class PluginVersion:
    """A plugin module whose instances are initialized (and started) and ready to serve."""

    source: PluginSource
    module: types.ModuleType
    instances: list[BasePlugin]
    logger: logging.Logger
    #: ``app.router`` when it was loaded: it holds the routes the instances added
    router: RouteRegistrar
    loaded_at: float = field(default_factory=time.time)
    process: IsolatedPlugin | None = None
    """the supervisor of its process when the plugin is isolated (its instances stand in)"""

    @property
    def event_plugins(self) -> list[BaseEventPlugin]:
        return [instance for instance in self.instances if isinstance(instance, BaseEventPlugin)]

    @property
    def background_plugins(self) -> list[BaseBackgroundPlugin]:
        return [instance for instance in self.instances if isinstance(instance, BaseBackgroundPlugin)]

    def routes(self) -> list[RouteSpec]:
        """Routes the background plugins asked for so far."""
        return [spec for plugin in self.background_plugins for spec in self.router.routes_of(plugin)]


def plugin_logger(module: str) -> logging.Logger:
    """The per-plugin child logger handed to callbacks."""
    return logging.getLogger(f"luna.plugins.{module}")


async def load_version(
    source: PluginSource, *, app: LunaApplication, timeout: float, leftovers: Leftovers
) -> PluginVersion:
    """Import, construct, initialize and start ``source``; raises :class:`PluginLoadError`."""
    try:
        module, classes = await _off_loop(source, "import", lambda: _import(source), timeout, leftovers)
    except PluginLoadError:
        MODULES.abandon(source.module)  # an import still running must not stay visible
        raise
    instances: list[BasePlugin] = []
    logger = plugin_logger(source.module)
    try:
        settings = freeze(source.settings)
        for cls in classes:
            instances.append(
                await _off_loop(
                    source, "construct", _constructor(cls, app, settings, source.origin), timeout, leftovers
                )
            )
        for instance in instances:
            await _step(instance, "initialize", source, timeout, leftovers)
        for instance in instances:
            if isinstance(instance, BaseBackgroundPlugin):
                await _step(instance, "start", source, timeout, leftovers)
    except BaseException:
        await close_instances(instances, timeout=timeout, logger=logger, leftovers=leftovers, source=source)
        raise
    return PluginVersion(source, module, instances, logger, app.router)


def _import(source: PluginSource) -> tuple[types.ModuleType, list[type[BasePlugin]]]:
    module = import_module(source)
    # in the thread too: finding the classes runs plugin code (metaclasses, properties)
    return module, plugin_classes(module)


def _constructor(
    cls: type[BasePlugin], app: LunaApplication, settings: Mapping[str, object], origin: str
) -> Callable[[], BasePlugin]:
    def construct() -> BasePlugin:
        try:
            with constructing_with(settings):
                return cls(app)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt... are the plugin's failure
            raise PluginLoadError("construct", _construct_failure(cls, exc, origin)) from exc

    return construct


def _construct_failure(cls: type[BasePlugin], exc: BaseException, origin: str) -> str:
    text = f"{cls.__name__}(app): {describe_exception(exc, origin)}"
    if isinstance(exc, RuntimeError) and "event loop" in str(exc):
        text += " (constructors run outside the event loop: open sessions and start tasks in initialize())"
    return text


async def _off_loop(
    source: PluginSource, stage: str, work: Callable[[], T], timeout: float, leftovers: Leftovers
) -> T:
    try:
        return await run_in_thread(
            work,
            timeout=timeout,
            leftovers=leftovers,
            plugin=source.module,
            code_hash=source.code_hash,
            what=stage,
        )
    except TimeoutError:
        raise PluginLoadError(stage, f"{stage} did not finish within {timeout:g} s") from None
    except PluginLoadError:
        raise
    except Exception as exc:  # not expected: the work wraps plugin errors itself
        raise PluginLoadError(stage, describe_exception(exc, source.origin)) from exc


async def _step(
    instance: BasePlugin, stage: str, source: PluginSource, timeout: float, leftovers: Leftovers
) -> None:
    name = f"{type(instance).__name__}.{stage}()"
    try:
        await call_with_timeout(
            getattr(instance, stage), timeout=timeout, abandon=_abandoner(leftovers, source, name)
        )
    except TimeoutError:
        raise PluginLoadError(stage, f"{name} did not finish within {timeout:g} s") from None
    except Exception as exc:
        raise PluginLoadError(stage, f"{name} raised {describe_exception(exc, source.origin)}") from exc


def _abandoner(leftovers: Leftovers, source: PluginSource, what: str) -> Callable[[asyncio.Task[Any]], None]:
    def abandon(task: asyncio.Task[Any]) -> None:
        leftovers.watch_task(task, plugin=source.module, code_hash=source.code_hash, what=what)

    return abandon


async def close_instances(
    instances: list[BasePlugin],
    *,
    timeout: float,
    logger: logging.Logger,
    leftovers: Leftovers,
    source: PluginSource,
    deadline: float | None = None,
) -> list[str]:
    """Await ``close()`` of each instance (last built first), each under ``timeout`` and all
    by ``deadline`` (monotonic), if given.

    Never raises, whatever the plugin does (a ``close()`` that ignores cancellation is
    abandoned and reported): returns the problems, which are also logged.
    """
    problems = []
    for instance in reversed(instances):
        name = f"{type(instance).__name__}.close()"
        limit = timeout if deadline is None else max(0.0, min(timeout, deadline - time.monotonic()))
        try:
            await call_with_timeout(
                instance.close, timeout=limit, abandon=_abandoner(leftovers, source, name)
            )
        except TimeoutError:
            problems.append(f"{name} did not finish within {limit:g} s")
        except Exception as exc:  # PluginEscapeError and PluginCancelledError included
            problems.append(f"{name} raised {describe_exception(exc, source.origin)}")
    for problem in problems:
        logger.warning("close: %s", problem)
    return problems

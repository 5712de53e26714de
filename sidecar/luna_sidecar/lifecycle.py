"""One loaded version of one plugin module, from import to close.

:func:`load_version` imports the code, makes one instance per plugin class, awaits
``initialize()`` and then ``start()`` of background plugins, each under a timeout. A failure at
any step closes what was already built and raises :class:`PluginLoadError`, so a broken version
never reaches the route table or the event queues.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from dataclasses import dataclass, field

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
    RouteSpec,
)
from luna_plugins.settings import constructing_with, freeze
from luna_sidecar.loader import PluginLoadError, describe_exception, import_module, plugin_classes
from luna_sidecar.sources import PluginSource
from luna_sidecar.timeouts import call_with_timeout

log = logging.getLogger(__name__)


@dataclass
class PluginVersion:
    """A plugin module whose instances are initialized (and started) and ready to serve."""

    source: PluginSource
    module: types.ModuleType
    instances: list[BasePlugin]
    logger: logging.Logger
    loaded_at: float = field(default_factory=time.time)

    @property
    def event_plugins(self) -> list[BaseEventPlugin]:
        return [instance for instance in self.instances if isinstance(instance, BaseEventPlugin)]

    @property
    def background_plugins(self) -> list[BaseBackgroundPlugin]:
        return [instance for instance in self.instances if isinstance(instance, BaseBackgroundPlugin)]

    def routes(self) -> list[RouteSpec]:
        """Routes the background plugins asked for so far."""
        return [spec for plugin in self.background_plugins for spec in plugin.__dict__.get("_lunaRoutes", [])]


def plugin_logger(module: str) -> logging.Logger:
    """The per-plugin child logger handed to callbacks."""
    return logging.getLogger(f"luna.plugins.{module}")


async def load_version(source: PluginSource, *, app: LunaApplication, timeout: float) -> PluginVersion:
    """Import, construct, initialize and start ``source``; raises :class:`PluginLoadError`."""
    module = import_module(source)
    classes = plugin_classes(module)
    instances: list[BasePlugin] = []
    try:
        settings = freeze(source.settings)
        for cls in classes:
            try:
                with constructing_with(settings):
                    instances.append(cls(app))
            except (Exception, asyncio.CancelledError, SystemExit) as exc:
                raise PluginLoadError(
                    "construct", f"{cls.__name__}(app): {describe_exception(exc, source.origin)}"
                ) from exc
        for instance in instances:
            await _step(instance, "initialize", source, timeout)
        for instance in instances:
            if isinstance(instance, BaseBackgroundPlugin):
                await _step(instance, "start", source, timeout)
    except BaseException:
        await close_instances(instances, timeout=timeout, logger=plugin_logger(source.module))
        raise
    return PluginVersion(source, module, instances, plugin_logger(source.module))


async def _step(instance: BasePlugin, stage: str, source: PluginSource, timeout: float) -> None:
    name = f"{type(instance).__name__}.{stage}()"
    try:
        await call_with_timeout(getattr(instance, stage), timeout=timeout)
    except TimeoutError:
        raise PluginLoadError(stage, f"{name} did not finish within {timeout:g} s") from None
    except Exception as exc:
        raise PluginLoadError(stage, f"{name} raised {describe_exception(exc, source.origin)}") from exc


async def close_instances(
    instances: list[BasePlugin], *, timeout: float, logger: logging.Logger
) -> list[str]:
    """Await ``close()`` of each instance (last built first), each under ``timeout``.

    Never raises: returns the problems, which are also logged.
    """
    problems = []
    for instance in reversed(instances):
        name = f"{type(instance).__name__}.close()"
        try:
            await call_with_timeout(instance.close, timeout=timeout)
        except TimeoutError:
            problems.append(f"{name} did not finish within {timeout:g} s")
        except Exception as exc:
            problems.append(f"{name} raised {describe_exception(exc)}")
    for problem in problems:
        logger.warning("close: %s", problem)
    return problems

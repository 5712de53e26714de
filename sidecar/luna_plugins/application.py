"""What plugins see of the service they run in (``self.app``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from luna_plugins.base.plugins_meta.base_plugins import BasePlugin, RouteSpec


class RouteRegistrar(Protocol):
    """``app.router``: where ``addRoute`` sends the routes a plugin asks for.

    The runtime hosting the plugins hands its own in (:meth:`LunaApplication.use_router`), as an
    aiohttp handler registers with ``app.router``; without a runtime, a :class:`RouteCollector`
    only keeps them.
    """

    def add(self, spec: RouteSpec) -> None:
        """Take ``spec`` (``spec.plugin`` asked for it); raise ``ValueError`` to refuse it, which
        the plugin's ``addRoute`` call then raises."""

    def routes_of(self, plugin: BasePlugin) -> list[RouteSpec]:
        """The routes ``plugin`` added and this registrar took, in the order added."""


class RouteCollector:
    """The router of an application no runtime hosts: keeps every route, per plugin.

    A plugin's unit test can look at what it registered: ``app.router.routes_of(plugin)``.
    Safe to call from any thread (constructors run outside the event loop).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # by id(): plugins need not be hashable; each list holds its plugin, so the id stays its own
        self._routes: dict[int, list[RouteSpec]] = {}

    def add(self, spec: RouteSpec) -> None:
        with self._lock:
            self._routes.setdefault(id(spec.plugin), []).append(spec)

    def routes_of(self, plugin: BasePlugin) -> list[RouteSpec]:
        with self._lock:
            return list(self._routes.get(id(plugin), ()))

    def _drop(self, keep: Callable[[int], bool]) -> None:
        """Forget the routes of every plugin whose ``id()`` ``keep`` refuses."""
        with self._lock:
            self._routes = {key: specs for key, specs in self._routes.items() if keep(key)}


class ApplicationContext:
    """``app.ctx``: shared service-wide helpers. ``logger`` is a standard :class:`logging.Logger`."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger


class LunaApplication:
    """The service application handed to every plugin constructor.

    Plugins may rely on ``app.ctx.logger`` (a standard logger), ``app.serviceName`` (the service
    the plugins extend, e.g. ``"handlers"``), ``app.config`` (a read-only mapping of
    service-wide settings; empty unless the runtime was given some) and ``app.router`` (the
    :class:`RouteRegistrar` behind ``addRoute``).
    """

    def __init__(
        self,
        serviceName: str,
        *,
        logger: logging.Logger | None = None,
        config: Mapping[str, Any] | None = None,
        router: RouteRegistrar | None = None,
    ) -> None:
        self.serviceName = serviceName
        self.ctx = ApplicationContext(logger or logging.getLogger(f"luna.{serviceName}.plugins"))
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))
        self._router: RouteRegistrar = router if router is not None else RouteCollector()

    @property
    def router(self) -> RouteRegistrar:
        """Where the plugins' routes go (a :class:`RouteCollector` until a runtime hosts them)."""
        return self._router

    def use_router(self, router: RouteRegistrar) -> None:
        """Send the routes plugins add from now on to ``router``: the runtime that hosts the
        plugins calls this once, before it constructs any."""
        self._router = router

    def __repr__(self) -> str:
        return f"LunaApplication(serviceName={self.serviceName!r})"


#: the type plugin authors annotate ``app`` with, as in the original service
T_LUNA_APPLICATION = LunaApplication

"""What plugins see of the service they run in (``self.app``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from luna_plugins.routes import RouteCollector, RouteRegistrar

__all__ = ["T_LUNA_APPLICATION", "ApplicationContext", "LunaApplication", "RouteCollector", "RouteRegistrar"]


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

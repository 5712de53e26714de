"""Routes between a plugin and whatever serves them: what a plugin asks for (:class:`RouteSpec`),
where ``addRoute`` sends it (``app.router``, a :class:`RouteRegistrar`) and the registrar an
application has until a runtime hands its own in (:class:`RouteCollector`).

Nothing here knows the plugin classes: a route's ``plugin`` is whatever instance asked.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from luna_plugins.http import PluginRequest

__all__ = ["RouteCollector", "RouteEndpoint", "RouteRegistrar", "RouteSpec"]

RouteEndpoint = Callable[[PluginRequest], Awaitable[web.StreamResponse] | web.StreamResponse]
"""what serves one request of a route"""


@dataclass(frozen=True)
class RouteSpec:
    """A route a background plugin asked for: ``path`` (``{name}`` segments are variables),
    the lower-case ``methods`` it serves and the ``endpoint`` called per request."""

    path: str
    methods: frozenset[str]
    endpoint: RouteEndpoint
    plugin: Any
    """the plugin instance that asked (a ``BaseBackgroundPlugin``)"""


class RouteRegistrar(Protocol):
    """``app.router``: where ``addRoute`` sends the routes a plugin asks for.

    The runtime hosting the plugins hands its own in (:meth:`LunaApplication.use_router`), as an
    aiohttp handler registers with ``app.router``; without a runtime, a :class:`RouteCollector`
    only keeps them.
    """

    def add(self, spec: RouteSpec) -> None:
        """Take ``spec`` (``spec.plugin`` asked for it); raise ``ValueError`` to refuse it, which
        the plugin's ``addRoute`` call then raises."""

    def routes_of(self, plugin: object) -> list[RouteSpec]:
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

    def routes_of(self, plugin: object) -> list[RouteSpec]:
        with self._lock:
            return list(self._routes.get(id(plugin), ()))

    def _drop(self, keep: Callable[[int], bool]) -> None:
        """Forget the routes of every plugin whose ``id()`` ``keep`` refuses."""
        with self._lock:
            self._routes = {key: specs for key, specs in self._routes.items() if keep(key)}

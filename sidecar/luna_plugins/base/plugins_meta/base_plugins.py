"""Base classes of LUNA plugins, importable as in the original service.

A plugin module defines concrete subclasses of :class:`BaseEventPlugin` or
:class:`BaseBackgroundPlugin`; the runtime makes exactly one instance of each with ``cls(app)``,
awaits ``initialize()`` (then ``start()`` for background plugins), calls the plugin while it
runs, and awaits ``close()`` when it is unloaded.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from aiohttp import web

from luna_contract.plugin_modules import EVENT_NAMES
from luna_plugins import settings as _settings
from luna_plugins.application import T_LUNA_APPLICATION, LunaApplication
from luna_plugins.http import HTTP_VERBS, PluginRequest, normalize_methods, pluginHTTPResponse
from luna_plugins.route_paths import parse_route_path
from luna_plugins.routes import RouteEndpoint, RouteRegistrar, RouteSpec

__all__ = [
    "EVENT_NAMES",
    "T_LUNA_APPLICATION",
    "BaseBackgroundHandler",
    "BaseBackgroundPlugin",
    "BaseEventPlugin",
    "BasePlugin",
    "LunaApplication",
    "PluginRequest",
    "RouteRegistrar",
    "RouteSpec",
    "pluginHTTPResponse",
]


class BasePlugin(ABC):  # noqa: B024 - abstract by role; subclasses add the abstract methods
    """What every plugin has: ``self.app`` (the service application) and ``self.settings``
    (its per-plugin settings, a read-only mapping, empty when none were given)."""

    def __init__(self, app: T_LUNA_APPLICATION) -> None:
        self.app = app
        self.settings: Mapping[str, Any] = _settings.current()

    async def initialize(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Prepare the plugin (open sessions, register routes). Runs under a timeout."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what ``initialize``/``start`` acquired. Runs under a timeout."""


class BaseEventPlugin(BasePlugin):
    """A plugin called for every event named by its class attribute ``eventName``.

    For ``monitoring_event`` the runtime awaits ``handleEvent(points, logger)``; for
    ``sending_event`` see :class:`luna_plugins.handler_event.base_plugin.BaseEventSendingPlugin`.
    Each call runs under a timeout, in this plugin's own queue, one batch at a time.
    """

    eventName: ClassVar[str]

    @abstractmethod
    async def handleEvent(self, *args: Any, **kwargs: Any) -> None:
        """Handle one event (see the class docstring for the arguments)."""


class BaseBackgroundHandler:
    """A class-based route handler: its ``get``, ``post``, ``put``, ``patch``, ``delete``...
    methods (sync or async, taking the request) are the verbs it serves.

    A fresh instance serves each request; ``self.plugin`` and ``self.app`` are the plugin that
    registered the route and its application.
    """

    def __init__(self, plugin: BaseBackgroundPlugin) -> None:
        self.plugin = plugin
        self.app = plugin.app

    @staticmethod
    def response(
        body: str | bytes | dict[str, Any] | list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
        statusCode: int = 200,
    ) -> web.Response:
        """Build the reply; see :func:`pluginHTTPResponse` for how the body is encoded."""
        return pluginHTTPResponse(statusCode=statusCode, body=body, headers=headers)

    @classmethod
    def implementedVerbs(cls) -> frozenset[str]:
        """The verbs this handler class implements (methods defined below this base)."""
        return frozenset(
            verb
            for verb in HTTP_VERBS
            if callable(getattr(cls, verb, None)) and not hasattr(BaseBackgroundHandler, verb)
        )


class BaseBackgroundPlugin(BasePlugin):
    """A plugin that runs background work and may serve HTTP routes.

    ``start()`` must only start the work (create tasks) and return; ``close()`` stops it.
    """

    async def start(self) -> None:
        """Start background work without awaiting its end. Runs under a timeout."""

    def addRoute(
        self,
        path: str,
        handler: type[BaseBackgroundHandler] | Callable[..., Any],
        methods: Iterable[str] | None = None,
    ) -> None:
        """Serve ``handler`` at ``path`` (from the service root, e.g. ``/teapot``).

        ``handler`` is a :class:`BaseBackgroundHandler` subclass (its verb methods are the
        allowed methods) or a plain function, sync or async, taking the request and returning
        :func:`pluginHTTPResponse`; ``methods`` defaults to the class's verbs or ``{"get"}``.
        Routes added during ``initialize()`` go live together once the plugin has started;
        raises ``ValueError`` for a bad path or method, or when ``self.app.router`` refuses
        the route (a running plugin's route that another plugin already serves).
        """
        spec = RouteSpec(
            path=_check_path(path),
            methods=_route_methods(handler, methods),
            endpoint=_make_endpoint(self, handler),
            plugin=self,
        )
        router: RouteRegistrar | None = getattr(self.app, "router", None)
        if router is None:
            raise TypeError(
                f"{type(self).__name__}.addRoute: self.app is {self.app!r}, not the LunaApplication "
                "the plugin was constructed with; keep the app passed to __init__ as self.app"
            )
        router.add(spec)


def _check_path(path: str) -> str:
    return parse_route_path(path).text


def _route_methods(handler: Any, methods: Iterable[str] | None) -> frozenset[str]:
    if inspect.isclass(handler) and issubclass(handler, BaseBackgroundHandler):
        implemented = handler.implementedVerbs()
        if methods is None:
            if not implemented:
                raise ValueError(f"handler class {handler.__name__} implements no HTTP verb method")
            return implemented
        wanted = normalize_methods(methods)
        missing = wanted - implemented
        if missing:
            raise ValueError(f"handler class {handler.__name__} has no method(s) {sorted(missing)}")
        return wanted
    if not callable(handler):
        raise ValueError(
            f"route handler must be a BaseBackgroundHandler subclass or a function, got {handler!r}"
        )
    return normalize_methods(methods if methods is not None else ("get",))


def _make_endpoint(plugin: BaseBackgroundPlugin, handler: Any) -> RouteEndpoint:
    if inspect.isclass(handler) and issubclass(handler, BaseBackgroundHandler):
        handler_class: type[BaseBackgroundHandler] = handler

        def class_endpoint(request: PluginRequest) -> Any:
            instance = handler_class(plugin)
            return getattr(instance, request.method.lower())(request)

        return class_endpoint
    function: RouteEndpoint = handler
    return function

"""The luna-plugins SDK: what a plugin file may import.

The original service's import paths work as they are
(``luna_plugins.base.plugins_meta.base_plugins``, ``luna_plugins.handler_event.base_plugin``,
``log``); this module re-exports the whole public surface in one place.
"""

from typing import TYPE_CHECKING, Any

from luna_plugins.application import T_LUNA_APPLICATION, LunaApplication, RouteCollector, RouteRegistrar
from luna_plugins.base.plugins_meta.base_plugins import (
    EVENT_NAMES,
    BaseBackgroundHandler,
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
    RouteSpec,
)
from luna_plugins.delivery import DeliveryInfo, RetryLater, delivery_context
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin, Event, RawEvent
from luna_plugins.http import PluginRequest, RequestParameters, pluginHTTPResponse
from luna_plugins.log import Logger

if TYPE_CHECKING:
    from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict

__all__ = [
    "EVENT_NAMES",
    "T_LUNA_APPLICATION",
    "BaseBackgroundHandler",
    "BaseBackgroundPlugin",
    "BaseEventPlugin",
    "BaseEventSendingPlugin",
    "BasePlugin",
    "DeliveryInfo",
    "Event",
    "Logger",
    "LunaApplication",
    "MonitoringPoint",
    "PluginRequest",
    "RawEvent",
    "ReadOnlyDict",
    "RequestParameters",
    "RetryLater",
    "RouteCollector",
    "RouteRegistrar",
    "RouteSpec",
    "delivery_context",
    "pluginHTTPResponse",
]


def __getattr__(name: str) -> Any:
    # The monitoring types are built on msgspec; importing them on first use keeps
    # ``luna_plugins.client`` (which services import) free of anything beyond aiohttp.
    if name in ("MonitoringPoint", "ReadOnlyDict"):
        from luna_plugins import monitoring

        return getattr(monitoring, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

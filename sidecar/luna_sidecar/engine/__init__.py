"""The plugin engine: loads plugin versions, converges on the desired list, routes and delivers.

``runtime`` applies a desired list (``lifecycle`` and ``loader`` load a version, ``packages``
installs its requirements first); ``routing`` holds the live route table; ``bus``, ``queues``
and ``eager`` deliver intake batches to the event plugins' own queues. It takes the desired
state (:mod:`luna_sidecar.desired`) as input and knows nothing of HTTP or of Kubernetes.
"""

from luna_sidecar.engine.bus import Delivery, EventBus, PointBuffer
from luna_sidecar.engine.loader import describe_exception, forget_module
from luna_sidecar.engine.packages import PackageSettings
from luna_sidecar.engine.routing import RouteEntry, RouteTable
from luna_sidecar.engine.runtime import Runtime, RuntimeLimits

__all__ = [
    "Delivery",
    "EventBus",
    "PackageSettings",
    "PointBuffer",
    "RouteEntry",
    "RouteTable",
    "Runtime",
    "RuntimeLimits",
    "describe_exception",
    "forget_module",
]

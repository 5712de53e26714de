"""``luna_build_info``: which build of luna-plugins a process runs, on its ``/metrics``.

Both processes register the same gauge (value 1) with the labels ``component`` (``operator`` or
``sidecar``), ``version`` (the installed luna-plugins distribution's, ``unknown`` when it is not
installed) and ``python_version``, so a query such as
``count by (version) (luna_build_info)`` shows an operator and sidecars of different versions.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import CollectorRegistry, Gauge

BUILD_INFO = "luna_build_info"
DISTRIBUTION = "luna-plugins"


def version() -> str:
    """The installed luna-plugins version, or ``unknown``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_labels(component: str) -> dict[str, str]:
    """The labels of ``luna_build_info`` for ``component`` in this process."""
    return {"component": component, "version": version(), "python_version": platform.python_version()}


def register_build_info(registry: CollectorRegistry, component: str) -> Gauge:
    """Register ``luna_build_info`` on ``registry`` with this process's labels, set to 1."""
    labels = build_labels(component)
    gauge = Gauge(
        BUILD_INFO, "The running build of luna-plugins (always 1).", list(labels), registry=registry
    )
    gauge.labels(**labels).set(1)
    return gauge

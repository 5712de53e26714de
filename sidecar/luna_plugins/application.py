"""What plugins see of the service they run in (``self.app``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


class ApplicationContext:
    """``app.ctx``: shared service-wide helpers. ``logger`` is a standard :class:`logging.Logger`."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger


class LunaApplication:
    """The service application handed to every plugin constructor.

    Plugins may rely on ``app.ctx.logger`` (a standard logger), ``app.serviceName`` (the service
    the plugins extend, e.g. ``"handlers"``) and ``app.config`` (a read-only mapping of
    service-wide settings; empty unless the runtime was given some).
    """

    def __init__(
        self,
        serviceName: str,
        *,
        logger: logging.Logger | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.serviceName = serviceName
        self.ctx = ApplicationContext(logger or logging.getLogger(f"luna.{serviceName}.plugins"))
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))

    def __repr__(self) -> str:
        return f"LunaApplication(serviceName={self.serviceName!r})"


#: the type plugin authors annotate ``app`` with, as in the original service
T_LUNA_APPLICATION = LunaApplication

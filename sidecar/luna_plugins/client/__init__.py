"""The service client under the SDK's name: ``luna_plugins.client`` is
:mod:`luna_plugins_client` (the ``luna-plugins-client`` distribution, which the full
``luna-plugins`` distribution holds too). New code may import either; see that module.
"""

from luna_plugins_client import (
    ADMIN_URL_VARIABLE,
    DEFAULT_ADMIN_URL,
    REQUEST_ID_HEADER,
    InvalidPointError,
    SenderSettings,
    SenderStats,
    SidecarSender,
    admin_url,
    error_code_of,
    monitoring_middleware,
    new_request_id,
    request_id_of,
    route_name,
)

__all__ = [
    "ADMIN_URL_VARIABLE",
    "DEFAULT_ADMIN_URL",
    "REQUEST_ID_HEADER",
    "InvalidPointError",
    "SenderSettings",
    "SenderStats",
    "SidecarSender",
    "admin_url",
    "error_code_of",
    "monitoring_middleware",
    "new_request_id",
    "request_id_of",
    "route_name",
]

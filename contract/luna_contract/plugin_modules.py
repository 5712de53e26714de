"""What a plugin module may be called and which events it may ask for: the SDK, the runtime
and the operator apply the same rules."""

from __future__ import annotations

import keyword
import sys

__all__ = ["EVENT_NAMES", "RESERVED_MODULES", "check_module_name", "module_name"]

EVENT_NAMES = frozenset({"monitoring_event", "sending_event"})
"""the events a service sends its event plugins (``eventName`` of an event plugin)"""

RESERVED_MODULES = frozenset(sys.stdlib_module_names) | {
    "luna_plugins",
    "luna_sidecar",
    "luna_cli",
    "luna_operator",
    "luna_contract",
    "luna_cluster",
    "log",
    "aiohttp",
    "multidict",
    "yarl",
    "prometheus_client",
    "yaml",
    "kopf",
    "kubernetes_asyncio",
}
"""module names a plugin may not take: the runtime registers plugins in ``sys.modules``, so a
plugin called ``json`` would replace the standard library's for everyone in the process"""


def check_module_name(name: str) -> str | None:
    """Why ``name`` cannot be a plugin module name, or ``None`` when it can."""
    if not name.isidentifier() or keyword.iskeyword(name):
        return f"{name!r} is not a Python module name (letters, digits and _; not starting with a digit)"
    if name in RESERVED_MODULES:
        return f"{name!r} would shadow the module of that name used by the runtime or the standard library"
    return None


def module_name(plugin: str, spec_module: str | None) -> str:
    """A LunaPlugin's module: ``spec.module``, else ``metadata.name`` with ``-`` as ``_``."""
    return spec_module or plugin.replace("-", "_")

"""Which module names a plugin may have (shared by the runtime and the operator)."""

from __future__ import annotations

import keyword
import sys

#: module names a plugin may not take: the runtime registers plugins in ``sys.modules``, so a
#: plugin called ``json`` would replace the standard library's for everyone in the process
RESERVED_MODULES = frozenset(sys.stdlib_module_names) | {
    "luna_plugins",
    "luna_sidecar",
    "luna_cli",
    "luna_operator",
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


def check_module_name(name: str) -> str | None:
    """Why ``name`` cannot be a plugin module name, or ``None`` when it can."""
    if not name.isidentifier() or keyword.iskeyword(name):
        return f"{name!r} is not a Python module name (letters, digits and _; not starting with a digit)"
    if name in RESERVED_MODULES:
        return f"{name!r} would shadow the module of that name used by the runtime or the standard library"
    return None

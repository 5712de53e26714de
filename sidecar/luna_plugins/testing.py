"""Testing a plugin file with pytest: the real runtime, in your test's process.

::

    from luna_plugins.testing import run_plugin

    async def test_tally():
        async with run_plugin("plugins/route_tally.py", settings={"slowSeconds": 1}) as plugin:
            reply = await plugin.request("GET", "/digest")

The harness belongs to the runtime (:mod:`luna_sidecar.testing` documents it); this module is its
name for plugin authors and loads it on first use, so importing ``luna_plugins`` never imports
the runtime, which sits above the SDK. Using it needs the runtime installed; plugins never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names are the runtime's; type checkers see them as they are there
    from luna_sidecar.testing import (
        Delivery,
        IntakeRefusedError,
        MissingRequirementError,
        PluginCallbackError,
        PluginHarness,
        PluginNotLoadedError,
        Reply,
        run_plugin,
    )

__all__ = [
    "Delivery",
    "IntakeRefusedError",
    "MissingRequirementError",
    "PluginCallbackError",
    "PluginHarness",
    "PluginNotLoadedError",
    "Reply",
    "run_plugin",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # The one place the SDK reaches the runtime: when a test asks for the harness, never on import.
    from luna_sidecar import testing

    value = getattr(testing, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""Testing a plugin file with pytest: the real runtime, in your test's process.

::

    from luna_plugins.testing import run_plugin

    async def test_tally():              # an async test (pytest-asyncio/pytest-aiohttp), or asyncio.run
        async with run_plugin("plugins/route_tally.py", settings={"slowSeconds": 1}) as plugin:
            await plugin.send_points([{"series": "requests", "tags": {...}, "fields": {...}}])
            reply = await plugin.request("GET", "/digest")
            assert reply.json() == {...}
            assert "tallied" in plugin.log_text()

:func:`run_plugin` loads the file the way the sidecar loads its plugins directory: the same
loader, lifecycle, timeouts and settings (``NAME.settings.json`` beside the file, or
``settings=``; ``secret_settings=`` stands for the values ``spec.settingsFrom`` brings).
Requirements (``NAME.requirements.txt`` beside the file, or ``requirements=``) are never
installed: they must be installed where the tests run, else :class:`MissingRequirementError`
names the one missing. Points and events go through the sidecar's intake and the plugin's own
queue; routes are served by the sidecar's dispatcher on a loopback port of the test's process.
:class:`PluginHarness` lists what a test may do. This is the one module of ``luna_plugins``
that needs the runtime (``luna_sidecar``) installed; plugins themselves never import it.
"""

from luna_sidecar.in_process import (
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

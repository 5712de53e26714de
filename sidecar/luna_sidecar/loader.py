"""Turning plugin code into plugin classes, without letting a broken file hurt the runtime.

``import_module`` executes the code as a module named after the plugin; ``plugin_classes`` picks
the concrete plugin classes *defined* in it (classes imported from another module are not
activated again). Every failure is a :class:`PluginLoadError` whose message names the file and line.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import traceback
import types

from luna_plugins.base.plugins_meta.base_plugins import (
    EVENT_NAMES,
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
)
from luna_sidecar.sources import PluginSource


class PluginLoadError(Exception):
    """A plugin could not be loaded or failed in its lifecycle.

    ``stage`` says where (import, classes, construct, initialize, start, routes, close).
    """

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


def describe_exception(exc: BaseException, origin: str | None = None) -> str:
    """``Type: message`` plus the innermost line of ``origin`` that was running, if any."""
    if isinstance(exc, SyntaxError):
        source_line = (exc.text or "").strip()
        shown = f": {source_line}" if source_line else ""
        return f"{type(exc).__name__}: {exc.msg} (at {exc.filename}:{exc.lineno}:{exc.offset}{shown})"
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if origin is not None:
        frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == origin]
        if frames:
            last = frames[-1]
            return f"{text} (at {origin}:{last.lineno} in {last.name})"
    return text


def import_module(source: PluginSource) -> types.ModuleType:
    """Execute ``source`` as a fresh module named ``source.module`` and return it.

    While the code runs the module is registered in ``sys.modules`` (so dataclasses, typing and
    relative lookups work); afterwards the previous entry, if any, is put back: the caller
    decides when the new version becomes the visible one (:func:`publish_module`).
    """
    lines = source.code.decode("utf-8", errors="replace").splitlines(keepends=True)
    # Register the text so tracebacks show the plugin's lines even when it has no file on disk.
    linecache.cache[source.origin] = (len(source.code), None, lines, source.origin)
    try:
        code = compile(source.code, source.origin, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise PluginLoadError("import", describe_exception(exc)) from exc
    module = types.ModuleType(source.module)
    module.__file__ = source.origin
    previous = sys.modules.get(source.module)
    sys.modules[source.module] = module
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # a plugin may raise anything, even SystemExit, at import
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginLoadError("import", describe_exception(exc, source.origin)) from exc
    finally:
        if previous is not None:
            sys.modules[source.module] = previous
        else:
            sys.modules.pop(source.module, None)
    return module


def publish_module(module: types.ModuleType) -> None:
    """Make ``module`` the one later plugins get from ``import NAME``."""
    sys.modules[module.__name__] = module


def forget_module(name: str) -> None:
    """Drop an unloaded plugin module from ``sys.modules``."""
    sys.modules.pop(name, None)


def plugin_classes(module: types.ModuleType) -> list[type[BasePlugin]]:
    """The concrete plugin classes defined in ``module``, in definition order.

    Raises :class:`PluginLoadError` when there is none, or when an event plugin names no event
    or an unknown one.
    """
    found: list[type[BasePlugin]] = []
    for value in vars(module).values():
        if not (inspect.isclass(value) and issubclass(value, BaseEventPlugin | BaseBackgroundPlugin)):
            continue
        if value.__module__ != module.__name__ or inspect.isabstract(value) or value in found:
            continue  # imported from elsewhere, abstract, or a second name (``Alias = Plugin``)
        if issubclass(value, BaseEventPlugin):
            event_name = getattr(value, "eventName", None)
            if event_name not in EVENT_NAMES:
                raise PluginLoadError(
                    "classes",
                    f"event plugin {value.__name__} has eventName {event_name!r}; "
                    f"expected one of {sorted(EVENT_NAMES)}",
                )
        found.append(value)
    if not found:
        raise PluginLoadError(
            "classes",
            "no concrete plugin class is defined in this module (a subclass of BaseEventPlugin, "
            "BaseEventSendingPlugin or BaseBackgroundPlugin with every abstract method implemented; "
            "classes imported from another module are not activated)",
        )
    return found

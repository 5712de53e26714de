"""Turning plugin code into plugin classes, without letting a broken file hurt the runtime.

``import_module`` executes the code as a module named after the plugin; ``plugin_classes`` picks
the concrete plugin classes *defined* in it (classes imported from another module are not
activated again). Every failure, whatever plugin code raised (``SystemExit`` and the compiler's
``RecursionError`` or ``MemoryError`` included), is a :class:`PluginLoadError` whose message
names the file and line. Both may run in a thread of their own (see ``plugin_threads``).

The runtime owns the plugin entries of ``sys.modules`` (:class:`PluginModules`): a module is
visible there while its code runs and once it is published; an import that finishes late, after
a newer version was published, never puts its own or an older module back.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import threading
import traceback
import types

from luna_contract.plugin_modules import EVENT_NAMES
from luna_plugins.base.plugins_meta.base_plugins import (
    BaseBackgroundPlugin,
    BaseEventPlugin,
    BasePlugin,
)
from luna_sidecar.desired import PluginSource
from luna_sidecar.isolation import PluginEscapeError


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
    if isinstance(exc, PluginEscapeError):
        exc = exc.original  # say what the plugin raised, not how the runtime contained it
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


class PluginModules:
    """The plugin modules in ``sys.modules``, kept consistent across threads.

    ``published`` is what ``import NAME`` gives other code: the running version of each plugin.
    While a version's code runs (:meth:`executing`) its module is visible too, so dataclasses,
    typing and pickling find it; when that code ends, however late, the entry goes back to
    whatever is published *then* (or away), and only if it is still this module's own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: dict[str, types.ModuleType] = {}
        self._executing: dict[int, types.ModuleType] = {}

    def begin(self, module: types.ModuleType) -> None:
        """``module``'s code is about to run: make it visible under its name."""
        with self._lock:
            self._executing[id(module)] = module
            sys.modules[module.__name__] = module

    def end(self, module: types.ModuleType) -> None:
        """``module``'s code has ended: put the published version back, unless another module
        took the name meanwhile."""
        with self._lock:
            self._executing.pop(id(module), None)
            if sys.modules.get(module.__name__) is module:
                self._restore(module.__name__)

    def abandon(self, name: str) -> None:
        """The runtime gave up on an import of ``name`` whose code still runs: the published
        version (or nothing) is what ``import NAME`` gives from now on, not the unfinished one."""
        with self._lock:
            current = sys.modules.get(name)
            if current is not None and id(current) in self._executing:
                self._restore(name)

    def _restore(self, name: str) -> None:
        published = self._published.get(name)
        if published is not None:
            sys.modules[name] = published
        else:
            sys.modules.pop(name, None)

    def publish(self, module: types.ModuleType) -> None:
        """Make ``module`` the one later plugins get from ``import NAME``."""
        with self._lock:
            self._published[module.__name__] = module
            sys.modules[module.__name__] = module

    def forget(self, name: str) -> None:
        """Drop an unloaded plugin module from ``sys.modules``."""
        with self._lock:
            published = self._published.pop(name, None)
            if published is not None and sys.modules.get(name) is published:
                sys.modules.pop(name, None)


#: the process's one registry: ``sys.modules`` is process-wide too
MODULES = PluginModules()


def import_module(source: PluginSource) -> types.ModuleType:
    """Execute ``source`` as a fresh module named ``source.module`` and return it.

    While the code runs the module is registered in ``sys.modules`` (so dataclasses, typing and
    relative lookups work); afterwards the published entry, if any, is put back: the caller
    decides when the new version becomes the visible one (:func:`publish_module`). Raises
    :class:`PluginLoadError` for anything the code (or the compiler) raises.
    """
    lines = source.code.decode("utf-8", errors="replace").splitlines(keepends=True)
    # Register the text so tracebacks show the plugin's lines even when it has no file on disk.
    linecache.cache[source.origin] = (len(source.code), None, lines, source.origin)
    try:
        code = compile(source.code, source.origin, "exec", dont_inherit=True)
    except BaseException as exc:  # the compiler raises RecursionError/MemoryError for deep nesting
        raise PluginLoadError("import", _compile_failure(exc)) from exc
    module = types.ModuleType(source.module)
    module.__file__ = source.origin
    MODULES.begin(module)
    try:
        exec(code, module.__dict__)
    except BaseException as exc:  # a plugin may raise anything at import: SystemExit, KeyboardInterrupt...
        raise PluginLoadError("import", describe_exception(exc, source.origin)) from exc
    finally:
        MODULES.end(module)
    return module


def _compile_failure(exc: BaseException) -> str:
    text = describe_exception(exc)
    if isinstance(exc, RecursionError | MemoryError):
        return f"{text} (raised by the compiler: an expression is nested or chained too deeply)"
    return text


def publish_module(module: types.ModuleType) -> None:
    """Make ``module`` the one later plugins get from ``import NAME``."""
    MODULES.publish(module)


def forget_module(name: str) -> None:
    """Drop an unloaded plugin module from ``sys.modules``."""
    MODULES.forget(name)


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

"""Per-plugin settings: the ``settings`` object of a ``LunaPlugin`` resource, read-only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

EMPTY_SETTINGS: Mapping[str, Any] = MappingProxyType({})

_current: ContextVar[Mapping[str, Any]] = ContextVar("luna_plugin_settings", default=EMPTY_SETTINGS)


def freeze(settings: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of ``settings`` (nested dicts are frozen too, lists become tuples)."""
    if not settings:
        return EMPTY_SETTINGS
    return MappingProxyType({key: _freeze_value(value) for key, value in settings.items()})


def _freeze_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return freeze(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze_value(item) for item in value)
    return value


@contextlib.contextmanager
def constructing_with(settings: Mapping[str, Any]) -> Iterator[None]:
    """While active, plugin constructors pick up ``settings`` as ``self.settings``.

    The runtime wraps ``cls(app)`` in this, so a plugin sees its settings already in ``__init__``.
    """
    token = _current.set(settings)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Mapping[str, Any]:
    """The settings of the plugin being constructed (empty outside construction)."""
    return _current.get()

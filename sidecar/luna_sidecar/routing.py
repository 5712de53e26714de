"""The table of plugin routes, replaceable while the server runs.

aiohttp freezes its router at start-up, so plugin routes live here instead and the public
listener asks this table for every request. A plugin's routes are swapped in one step
(``replace``), so a reload never shows a mix of old and new routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from luna_plugins.base.plugins_meta.base_plugins import RouteSpec

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteConflictError(ValueError):
    """A route is already served by another plugin (same path and verb)."""


@dataclass(frozen=True)
class RouteEntry:
    """A route as served: its owner plugin module, spec, and the ``route`` metric label."""

    plugin: str
    spec: RouteSpec
    label: str


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    by_method: dict[str, RouteEntry]
    verbs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Exact:
    """The routes of one path without variables, and the verbs it allows (made once per change)."""

    by_method: dict[str, RouteEntry]
    verbs: frozenset[str]


def route_shape(path: str) -> str:
    """The path with variable names erased: ``/a/{x}`` and ``/a/{y}`` claim the same shape."""
    return _VARIABLE.sub("{}", path)


def _compile(path: str) -> re.Pattern[str]:
    pieces, last = [], 0
    for match in _VARIABLE.finditer(path):
        pieces.append(re.escape(path[last : match.start()]))
        pieces.append(f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    pieces.append(re.escape(path[last:]))
    return re.compile("^" + "".join(pieces) + "$")


class RouteTable:
    """Resolves (method, path) to the plugin route serving it.

    Exact paths are one dict lookup; paths with ``{name}`` variables are tried in the order
    they were added, after exact paths. Lookups never see a half-applied change.
    """

    def __init__(self) -> None:
        self._by_plugin: dict[str, tuple[RouteEntry, ...]] = {}
        self._exact: dict[str, _Exact] = {}
        self._patterns: tuple[_Pattern, ...] = ()

    def routes_of(self, plugin: str) -> tuple[RouteEntry, ...]:
        """The routes ``plugin`` serves now."""
        return self._by_plugin.get(plugin, ())

    def conflicts(self, plugin: str, specs: Iterable[RouteSpec]) -> list[str]:
        """Routes in ``specs`` (or among themselves) already claimed by other plugins."""
        claimed: dict[tuple[str, str], str] = {}
        for owner, entries in self._by_plugin.items():
            if owner == plugin:
                continue
            for entry in entries:
                for method in entry.spec.methods:
                    claimed[(method, route_shape(entry.spec.path))] = owner
        problems = []
        for spec in specs:
            for method in sorted(spec.methods):
                key = (method, route_shape(spec.path))
                if key in claimed:
                    owner = claimed[key]
                    who = "this plugin twice" if owner == plugin else f"plugin {owner!r}"
                    problems.append(f"{method.upper()} {spec.path} is already served by {who}")
                claimed[key] = plugin
        return problems

    def replace(self, plugin: str, specs: Iterable[RouteSpec]) -> None:
        """Make ``specs`` the routes of ``plugin`` (an empty list removes them), in one step.

        Raises :class:`RouteConflictError` (and changes nothing) when another plugin holds one.
        """
        specs = list(specs)
        problems = self.conflicts(plugin, specs)
        if problems:
            raise RouteConflictError("; ".join(problems))
        by_plugin = dict(self._by_plugin)
        entries = tuple(
            RouteEntry(plugin, spec, f"{method.upper()}:{spec.path}")
            for spec in specs
            for method in sorted(spec.methods)
        )
        if entries:
            by_plugin[plugin] = entries
        else:
            by_plugin.pop(plugin, None)
        self._rebuild(by_plugin)

    def add(self, plugin: str, spec: RouteSpec) -> None:
        """Add one route to a running plugin; raises :class:`RouteConflictError` on a clash."""
        self.replace(plugin, [*dict.fromkeys(entry.spec for entry in self.routes_of(plugin)), spec])

    def _rebuild(self, by_plugin: dict[str, tuple[RouteEntry, ...]]) -> None:
        exact_methods: dict[str, dict[str, RouteEntry]] = {}
        patterns: dict[str, _Pattern] = {}
        for entries in by_plugin.values():
            for entry in entries:
                method = entry.label.split(":", 1)[0]
                path = entry.spec.path
                if _VARIABLE.search(path):
                    pattern = patterns.get(path)
                    if pattern is None:
                        pattern = patterns[path] = _Pattern(_compile(path), {})
                    pattern.by_method[method] = entry
                else:
                    exact_methods.setdefault(path, {})[method] = entry
        exact = {path: _Exact(methods, frozenset(methods)) for path, methods in exact_methods.items()}
        compiled = tuple(
            _Pattern(pattern.regex, pattern.by_method, frozenset(pattern.by_method))
            for pattern in patterns.values()
        )
        # Swap all three at once: a request in flight sees either the old or the new table.
        self._by_plugin, self._exact, self._patterns = by_plugin, exact, compiled

    def resolve(self, method: str, path: str) -> tuple[RouteEntry | None, dict[str, str], frozenset[str]]:
        """The entry for ``method path``, its path variables, and the verbs the path allows.

        No entry with a non-empty verb set means 405; no entry and no verbs means 404.
        """
        exact = self._exact.get(path)
        allowed: set[str] = set()
        if exact is not None:
            entry = self._pick(exact.by_method, method)
            if entry is not None:
                return entry, {}, exact.verbs
            allowed.update(exact.verbs)  # a variable route may still serve this verb
        for pattern in self._patterns:
            found = pattern.regex.match(path)
            if found is None:
                continue
            entry = self._pick(pattern.by_method, method)
            if entry is not None:
                return entry, found.groupdict(), pattern.verbs
            allowed.update(pattern.verbs)
        return None, {}, frozenset(allowed)

    @staticmethod
    def _pick(by_method: dict[str, RouteEntry], method: str) -> RouteEntry | None:
        entry = by_method.get(method)
        if entry is None and method == "HEAD":
            entry = by_method.get("GET")
        return entry

"""The table of plugin routes, replaceable while the server runs.

aiohttp freezes its router at start-up, so plugin routes live here instead and the public
listener asks this table for every request. A plugin's routes are swapped in one step
(``replace``), so a reload never shows a mix of old and new routes.

No plugin can take another plugin's requests: two plugins' routes that some request could match
both (same verb, overlapping paths: ``/{a}/{b}`` and ``/users/{id}``) are a conflict, refused for
the plugin that comes later. Inside one plugin, overlapping paths are allowed and the one with a
literal segment earlier wins.

:class:`PluginRoutes` is the ``app.router`` the runtime hands the plugins: it keeps the routes
each plugin instance adds until its version goes live, then puts later ones straight in the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from luna_plugins.application import RouteCollector
from luna_plugins.base.plugins_meta.base_plugins import BasePlugin, RouteSpec
from luna_plugins.route_paths import RoutePath, parse_route_path, request_segments


class RouteConflictError(ValueError):
    """A route overlaps one another plugin serves, or one this plugin already has (same verb)."""


@dataclass(frozen=True)
class RouteEntry:
    """A route as served: its owner plugin module, spec, and the ``route`` metric label."""

    plugin: str
    spec: RouteSpec
    label: str


@dataclass(frozen=True)
class _Pattern:
    path: RoutePath
    by_method: dict[str, RouteEntry]
    verbs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Exact:
    """The routes of one path without variables, and the verbs it allows (made once per change)."""

    by_method: dict[str, RouteEntry]
    verbs: frozenset[str]


def route_shape(path: str) -> str:
    """The path with variable names erased: ``/a/{x}`` and ``/a/{y}`` claim the same shape."""
    return parse_route_path(path).shape


def _verbs(methods: Iterable[str]) -> set[str]:
    """The verbs a route answers: GET also answers HEAD."""
    verbs = {method.upper() for method in methods}
    if "GET" in verbs:
        verbs.add("HEAD")
    return verbs


class RouteTally:
    """Answers per plugin since its version was swapped in: all of them and the 5xx ones (what a
    staged rollout judges a canary by). The runtime resets a plugin's when a version starts."""

    def __init__(self) -> None:
        self._by_plugin: dict[str, list[int]] = {}

    def count(self, plugin: str, status: int) -> None:
        """One answer of ``plugin``'s routes with ``status``."""
        cells = self._by_plugin.get(plugin)
        if cells is None:
            cells = self._by_plugin[plugin] = [0, 0]
        cells[0] += 1
        if status >= 500:
            cells[1] += 1

    def reset(self, plugin: str) -> None:
        """Start counting ``plugin``'s answers from zero (a new version runs)."""
        self._by_plugin.pop(plugin, None)

    def of(self, plugin: str) -> tuple[int, int]:
        """(answers, 5xx answers) of ``plugin`` since its version started."""
        answers, errors = self._by_plugin.get(plugin, (0, 0))
        return answers, errors


class RouteTable:
    """Resolves (method, path) to the plugin route serving it.

    Exact paths are one dict lookup; paths with ``{name}`` variables are tried after exact
    paths, the most specific first. Lookups never see a half-applied change. :attr:`tally`
    counts each plugin's answers.
    """

    def __init__(self) -> None:
        self.tally = RouteTally()
        self._by_plugin: dict[str, tuple[RouteEntry, ...]] = {}
        self._exact: dict[str, _Exact] = {}
        #: patterns by their number of segments, most specific first
        self._patterns: dict[int, tuple[_Pattern, ...]] = {}

    def routes_of(self, plugin: str) -> tuple[RouteEntry, ...]:
        """The routes ``plugin`` serves now."""
        return self._by_plugin.get(plugin, ())

    def conflicts(self, plugin: str, specs: Iterable[RouteSpec]) -> list[str]:
        """Routes in ``specs`` that overlap a route of another plugin, or repeat one of their own
        (same path shape and verb); each problem names both routes and the other plugin."""
        others = [
            (owner, entry.spec, parse_route_path(entry.spec.path), _verbs(entry.spec.methods))
            for owner, entries in self._by_plugin.items()
            if owner != plugin
            for entry in dict.fromkeys(entries, None)
        ]
        problems: list[str] = []
        mine: dict[tuple[str, str], str] = {}
        for spec in specs:
            path = parse_route_path(spec.path)
            verbs = _verbs(spec.methods)
            for method in sorted(spec.methods):
                key = (method, path.shape)
                if key in mine:
                    problems.append(f"{method.upper()} {spec.path} is already served by this plugin twice")
                mine[key] = spec.path
            for owner, other, other_path, other_verbs in others:
                shared = sorted(verbs & other_verbs)
                if not shared or not path.overlaps(other_path):
                    continue
                if path.shape == other_path.shape:
                    problems.append(f"{shared[0]} {spec.path} is already served by plugin {owner!r}")
                else:
                    problems.append(
                        f"{shared[0]} {spec.path} overlaps {other.path} of plugin {owner!r} "
                        "(a request could match both)"
                    )
        return list(dict.fromkeys(problems))

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
        patterns: dict[str, tuple[RoutePath, dict[str, RouteEntry]]] = {}
        for entries in by_plugin.values():
            for entry in entries:
                method = entry.label.split(":", 1)[0]
                path = parse_route_path(entry.spec.path)
                if path.has_variables:
                    patterns.setdefault(path.text, (path, {}))[1][method] = entry
                else:
                    exact_methods.setdefault(path.text, {})[method] = entry
        exact = {path: _Exact(methods, frozenset(methods)) for path, methods in exact_methods.items()}
        by_length: dict[int, list[_Pattern]] = {}
        for path, methods in sorted(patterns.values(), key=lambda item: item[0].specificity()):
            by_length.setdefault(len(path.segments), []).append(_Pattern(path, methods, frozenset(methods)))
        compiled = {length: tuple(found) for length, found in by_length.items()}
        # Swap all three at once: a request in flight sees either the old or the new table.
        self._by_plugin, self._exact, self._patterns = by_plugin, exact, compiled

    def resolve(self, method: str, path: str) -> tuple[RouteEntry | None, dict[str, str], frozenset[str]]:
        """The entry for ``method path``, its path variables, and the verbs the path allows.

        No entry with a non-empty verb set means 405; no entry and no verbs means 404. A path
        variable never matches ``.``, ``..``, an empty segment or an encoded slash.
        """
        exact = self._exact.get(path)
        allowed: set[str] = set()
        if exact is not None:
            entry = self._pick(exact.by_method, method)
            if entry is not None:
                return entry, {}, exact.verbs
            allowed.update(exact.verbs)  # a variable route may still serve this verb
        if self._patterns:
            segments = request_segments(path)
            for pattern in self._patterns.get(len(segments), ()):
                found = pattern.path.match(segments)
                if found is None:
                    continue
                entry = self._pick(pattern.by_method, method)
                if entry is not None:
                    return entry, found, pattern.verbs
                allowed.update(pattern.verbs)
        return None, {}, frozenset(allowed)

    @staticmethod
    def _pick(by_method: dict[str, RouteEntry], method: str) -> RouteEntry | None:
        entry = by_method.get(method)
        if entry is None and method == "HEAD":
            entry = by_method.get("GET")
        return entry


class PluginRoutes(RouteCollector):
    """The runtime's ``app.router``: the routes plugin instances add, and where they go.

    A route added before its plugin serves (in ``__init__``, ``initialize()``, ``start()``) is
    only kept: the runtime puts a version's routes in the table together (:meth:`routes_of`).
    Once the version serves (:meth:`serve`), a route goes to the table at once, under the
    plugin's module, or is refused (:class:`RouteConflictError` raised at the plugin's
    ``addRoute``). A retired version's routes are kept and never served.
    """

    def __init__(self, table: RouteTable) -> None:
        super().__init__()
        self._table = table
        #: id() of each plugin instance whose version serves, and its module
        self._serving: dict[int, str] = {}

    def add(self, spec: RouteSpec) -> None:
        module = self._serving.get(id(spec.plugin))
        if module is not None:
            self._table.add(module, spec)  # before keeping it: a conflict keeps it out
        super().add(spec)

    def serve(self, module: str, plugins: Iterable[BasePlugin]) -> None:
        """From now on, routes ``plugins`` add go to the table at once, as ``module``'s."""
        for plugin in plugins:
            self._serving[id(plugin)] = module

    def retire(self, plugins: Iterable[BasePlugin]) -> None:
        """Routes ``plugins`` add from now on are kept, never served."""
        for plugin in plugins:
            self._serving.pop(id(plugin), None)

    def forget(self, plugins: Iterable[BasePlugin]) -> None:
        """Drop everything about ``plugins`` (their version is closed)."""
        gone = {id(plugin) for plugin in plugins}
        for key in gone:
            self._serving.pop(key, None)
        self._drop(lambda key: key not in gone)

    def forget_unserved(self) -> None:
        """Drop the routes of every plugin that does not serve: a version that failed to load,
        a retired one, plugin objects made outside the runtime."""
        self._drop(lambda key: key in self._serving)

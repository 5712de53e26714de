"""The sidecars' reports (``LunaPluginRuntime``), read as untrusted input and kept per service.

:func:`parse_report` turns a report of any shape into a bounded :class:`RuntimeReport`, or None
when it cannot be used (no service). :class:`ReportBook` keeps the usable reports by
(namespace, service) and says, for each change, what it changes for the operator:

- a report that appears or goes changes the active list's owners (a *full* pass);
- a report whose plugins changed, or that became fresh or stale, changes ``status.loaded`` and
  ``status.pods`` of the modules concerned (a *status* pass);
- a heartbeat that changes nothing else changes nothing.

Reports whose plugins are reported alike share one :class:`ReportedPlugins` object, so a
service of a thousand pods at rest holds one copy of what they run, and a status pass looks at
each distinct content once (:meth:`ReportBook.snapshot`).

A report that names its active list's revision lists only where the sidecar differs from that
list (:mod:`luna_contract.reports`); the book expands it with what that revision names, learnt
from the active lists (:meth:`ReportBook.learn`, the last :data:`MAX_REVISIONS` per service).
A report naming a revision not learnt yet counts with what it lists, and is read again once the
revision is learnt.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from luna_contract.reports import MAX_REVISION_CHARS, REVISION_FIELD, active_revision

ServiceKey = tuple[str, str]
"""(namespace, service)"""

#: at most this many plugins of one report are read (an active list holds far fewer)
MAX_REPORTED_PLUGINS = 5000
#: the longest error of one pod kept (and quoted in ``status.pods``)
MAX_ERROR_CHARS = 500
#: the longest module, state, hash or pod name kept; longer values are cut
MAX_NAME_CHARS = 253
#: active-list revisions remembered per service (a report on an older one counts only what it
#: lists: its pod stays outdated until it follows a newer list)
MAX_REVISIONS = 16


class Figures(NamedTuple):
    """What a pod reports of a plugin under a staged rollout, for the version that runs, since it
    started (see :class:`luna_contract.reports.PluginReport`)."""

    callbacks: int
    failed_callbacks: int
    route_answers: int
    route_errors: int
    dropped: int
    loop_blocked_seconds: float


@dataclass(frozen=True, slots=True)
class PodPlugin:
    """One module as one pod reports it."""

    state: str
    code_hash: str | None = None
    """the version it runs (None: none runs)"""
    failed_code_hash: str | None = None
    """a version that failed to load (a newer one, when ``code_hash`` keeps running)"""
    error: str | None = None
    figures: Figures | None = None
    """its figures, while it is under a staged rollout"""
    dead_letters: int = 0
    """dead letters its durable delivery holds now (at-least-once plugins; 0 when it reports none)"""


_FIGURE_FIELDS = ("callbacks", "failedCallbacks", "routeAnswers", "routeErrors", "dropped")
#: the largest count read from a report
MAX_COUNT = 2**53


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0
    return int(min(max(value, 0), MAX_COUNT))


def _has_figures(item: Mapping[str, Any]) -> bool:
    return item.get("callbacks") is not None or item.get("routeAnswers") is not None


def _dead_letters(item: Mapping[str, Any]) -> int:
    """The dead letters a report entry's ``delivery`` holds; 0 for anything else; never raises."""
    delivery = item.get("delivery")
    return _count(delivery.get("deadLetters")) if isinstance(delivery, dict) else 0


def _figures(item: Mapping[str, Any]) -> Figures | None:
    """The figures of a report entry (None when it carries none); never raises."""
    if not _has_figures(item):
        return None
    blocked = item.get("loopBlockedSeconds")
    seconds = float(blocked) if isinstance(blocked, (int, float)) and not isinstance(blocked, bool) else 0.0
    callbacks, failed, answers, errors, dropped = (_count(item.get(name)) for name in _FIGURE_FIELDS)
    blocked_seconds = min(max(seconds, 0.0), 1e9) if seconds == seconds else 0.0
    return Figures(callbacks, failed, answers, errors, dropped, blocked_seconds)


class ReportedPlugins:
    """What one pod runs, module -> :class:`PodPlugin`; shared by every report that says the
    same (compare with ``is``). Read-only."""

    __slots__ = ("__weakref__", "entries")

    def __init__(self, entries: dict[str, PodPlugin]) -> None:
        self.entries: Mapping[str, PodPlugin] = entries

    def get(self, module: str) -> PodPlugin | None:
        return self.entries.get(module)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True, slots=True)
class RuntimeReport:
    """One sidecar's report: who, for which service, when, and what it runs."""

    namespace: str
    name: str
    uid: str
    service: str
    pod: str
    heartbeat: float | None
    """when the sidecar last refreshed it (epoch seconds; never later than when it arrived),
    None when the report carries no readable time (then it never counts as fresh)"""
    plugins: ReportedPlugins
    revision: str | None = None
    """the active list's revision the report names, when that revision was not known when it
    was read (its plugins are then only what it lists); None otherwise"""

    @property
    def key(self) -> ServiceKey:
        return (self.namespace, self.service)


_SHARED: weakref.WeakValueDictionary[tuple[tuple[str, PodPlugin], ...], ReportedPlugins] = (
    weakref.WeakValueDictionary()
)
_BY_RAW: weakref.WeakValueDictionary[tuple[object, ...], ReportedPlugins] = weakref.WeakValueDictionary()
_EMPTY = ReportedPlugins({})


def _text(value: object, limit: int = MAX_NAME_CHARS) -> str | None:
    """``value`` as a bounded, interned string; None when it is not a non-empty string."""
    if not isinstance(value, str) or not value:
        return None
    return sys.intern(value[:limit])


def _cut(value: object, limit: int) -> object:
    return value[:limit] if isinstance(value, str) else value


def _raw_key(plugins: list[Any]) -> tuple[object, ...]:
    """The entries of ``spec.plugins`` as a tuple, strings cut to their bounds (so a key never
    holds more than a parsed report would); unhashable when a value is a list or an object."""
    return tuple(
        (
            _cut(item.get("module"), MAX_NAME_CHARS),
            _cut(item.get("state"), 32),
            _cut(item.get("codeHash"), MAX_NAME_CHARS),
            _cut(item.get("failedCodeHash"), MAX_NAME_CHARS),
            _cut(item.get("error"), MAX_ERROR_CHARS),
            *(item.get(name) for name in _FIGURE_FIELDS),
            item.get("loopBlockedSeconds") if _has_figures(item) else None,
            _dead_letters(item),
        )
        if isinstance(item, dict)
        else None
        for item in plugins[:MAX_REPORTED_PLUGINS]
    )


def _shared(plugins: object, base: tuple[str, Mapping[str, str]] | None = None) -> ReportedPlugins:
    """The ``spec.plugins`` of a report as a shared :class:`ReportedPlugins` (bounded; entries
    that are not objects with a module name are skipped; the first entry of a module wins),
    over ``base`` (a revision and what it names: each module ``running`` that version) when the
    report names a known revision.

    Reports are mostly the same as the last one: their raw entries are looked up first, and
    only a content not seen before is parsed."""
    if not isinstance(plugins, list):
        plugins = []
    if not plugins and base is None:
        return _EMPTY
    raw: tuple[object, ...] | None = (base[0] if base else None, *_raw_key(plugins))
    try:
        found = _BY_RAW.get(raw) if raw is not None else None
    except TypeError:  # a list or an object where a string belongs: parse it the long way
        raw, found = None, None
    if found is not None:
        return found
    entries: dict[str, PodPlugin] = {}
    if base is not None:
        entries.update((module, PodPlugin("running", code_hash)) for module, code_hash in base[1].items())
    listed: set[str] = set()
    for item in plugins[:MAX_REPORTED_PLUGINS]:
        if not isinstance(item, dict):
            continue
        module = _text(item.get("module"))
        if module is None or module in listed:
            continue
        listed.add(module)
        error = item.get("error")
        entries[module] = PodPlugin(
            _text(item.get("state"), 32) or "unknown",
            _text(item.get("codeHash")),
            _text(item.get("failedCodeHash")),
            error[:MAX_ERROR_CHARS] if isinstance(error, str) and error else None,
            _figures(item),
            _dead_letters(item),
        )
    key = tuple(sorted(entries.items(), key=lambda pair: pair[0]))
    found = _SHARED.get(key)
    if found is None:
        found = ReportedPlugins(entries)
        _SHARED[key] = found
    if raw is not None:
        _BY_RAW[raw] = found
    return found


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_report(
    body: Mapping[str, Any],
    *,
    received: float,
    revisions: Mapping[ServiceKey, Mapping[str, Mapping[str, str]]] | None = None,
) -> RuntimeReport | None:
    """The usable part of a ``LunaPluginRuntime`` as the API returns it, received at
    ``received`` (epoch seconds); None when it names no service. Never raises for its shape.

    ``revisions``: per service, the active-list revisions known (revision -> module -> code
    hash), to expand a report that names one."""
    meta = body.get("metadata")
    spec = body.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        return None
    service = _text(spec.get("service"), 63)
    name = _text(meta.get("name"))
    namespace = _text(meta.get("namespace"))
    if service is None or name is None or namespace is None:
        return None
    beat = _epoch(spec.get("heartbeatTime"))
    revision = spec.get(REVISION_FIELD)
    base: tuple[str, Mapping[str, str]] | None = None
    unknown: str | None = None
    if isinstance(revision, str) and 0 < len(revision) <= MAX_REVISION_CHARS:
        named = (revisions or {}).get((namespace, service), {}).get(revision)
        if named is not None:
            base = (revision, named)
        else:
            unknown = sys.intern(revision)
    return RuntimeReport(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or "")[:64],
        service=service,
        pod=_text(spec.get("pod")) or name,
        heartbeat=min(beat, received) if beat is not None else None,
        plugins=_shared(spec.get("plugins"), base),
        revision=unknown,
    )


@dataclass(frozen=True)
class ReportChange:
    """What a change of the reports means for one service."""

    service: ServiceKey
    owners: bool = False
    """a report appeared or went: the active list's owners change"""
    modules: frozenset[str] | None = frozenset()
    """modules whose reported state changed; None: every module (a pod started or stopped counting)"""


@dataclass(frozen=True)
class ReportGroup:
    """Pods that report the same plugins (one shared :class:`ReportedPlugins`)."""

    plugins: ReportedPlugins
    pods: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportSnapshot:
    """The fresh reports of one service at one moment, grouped by what they report."""

    groups: list[ReportGroup]
    pods: int

    def __iter__(self) -> Iterator[ReportGroup]:
        return iter(self.groups)


def _changed_modules(old: ReportedPlugins, new: ReportedPlugins) -> frozenset[str]:
    if old is new:
        return frozenset()
    modules = set(old.entries) | set(new.entries)
    return frozenset(m for m in modules if old.entries.get(m) != new.entries.get(m))


class ReportBook:
    """Every usable report, by service; reports are replaced whole and never mutated.

    ``ttl``: seconds after its heartbeat that a report stops counting (``--report-ttl``).
    Every method returns the :class:`ReportChange` per service it caused."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._by_service: dict[ServiceKey, dict[str, RuntimeReport]] = {}
        self._where: dict[tuple[str, str], ServiceKey] = {}  # (namespace, name) -> its service
        self._fresh: dict[ServiceKey, frozenset[str]] = {}  # names counted at the last check
        self._revisions: dict[ServiceKey, dict[str, Mapping[str, str]]] = {}  # oldest first
        self._unresolved: dict[tuple[str, str], Mapping[str, Any]] = {}  # reports on unknown revisions
        self.rejected = 0
        """reports ignored because they name no service (or are no object at all)"""

    # --- changes ------------------------------------------------------------------------------

    def learn(self, key: ServiceKey, code_hashes: Mapping[str, str], *, now: float) -> list[ReportChange]:
        """The service's active list names ``code_hashes`` (module -> code hash): reports naming
        its revision are expanded with it from now on, and those that named it before are read
        again."""
        revision = active_revision(code_hashes)
        known = self._revisions.setdefault(key, {})
        if revision in known:
            known[revision] = known.pop(revision)  # the most recent last
            return []
        known[revision] = {sys.intern(m[:MAX_NAME_CHARS]): sys.intern(h) for m, h in code_hashes.items()}
        while len(known) > MAX_REVISIONS:
            del known[next(iter(known))]
        changes: list[ReportChange] = []
        for body in list(self._unresolved.values()):
            report = self.get(body)
            if report is not None and report.key == key and report.revision == revision:
                changes += self.put(body, now=now)
        return changes

    def put(self, body: Mapping[str, Any], *, now: float) -> list[ReportChange]:
        """Add or replace a report (ADDED or MODIFIED)."""
        report = parse_report(body, received=now, revisions=self._revisions)
        meta = body.get("metadata")
        ident = (
            (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            if isinstance(meta, dict)
            else ("", "")
        )
        if report is not None and report.revision is not None:
            self._unresolved[ident] = body
        else:
            self._unresolved.pop(ident, None)
        if report is None:
            self.rejected += 1
            return self._drop(ident, now)  # a report that lost its service no longer counts
        changes = []
        previous_key = self._where.get(ident)
        if previous_key is not None and previous_key != report.key:
            changes += self._drop(ident, now)
        reports = self._by_service.setdefault(report.key, {})
        previous = reports.get(report.name)
        reports[report.name] = report
        self._where[ident] = report.key
        was_fresh = report.name in self._fresh.get(report.key, frozenset())
        is_fresh = self._is_fresh(report, now)
        if is_fresh != was_fresh:
            self._mark(report.key, report.name, fresh=is_fresh)
            changes.append(ReportChange(report.key, owners=previous is None, modules=None))
        elif previous is None:
            changes.append(ReportChange(report.key, owners=True))
        elif is_fresh:
            modules = _changed_modules(previous.plugins, report.plugins)
            if modules:
                changes.append(ReportChange(report.key, modules=modules))
        if previous is not None and previous.uid != report.uid:
            changes.append(ReportChange(report.key, owners=True))
        return changes

    def remove(self, body: Mapping[str, Any], *, now: float) -> list[ReportChange]:
        """Forget a report (DELETED)."""
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            return []
        return self._drop((str(meta.get("namespace") or ""), str(meta.get("name") or "")), now)

    def replace(
        self, namespace: str | None, bodies: Iterable[Mapping[str, Any]], *, now: float
    ) -> list[ReportChange]:
        """After a LIST of ``namespace`` (None: all namespaces): the reports are exactly
        ``bodies``; reports missing from them were deleted meanwhile."""
        listed: set[tuple[str, str]] = set()
        changes: list[ReportChange] = []
        for body in bodies:
            meta = body.get("metadata")
            if isinstance(meta, dict):
                listed.add((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
            changes += self.put(body, now=now)
        for ident in [i for i in self._where if (namespace is None or i[0] == namespace) and i not in listed]:
            changes += self._drop(ident, now)
        return changes

    def expire(self, now: float) -> list[ReportChange]:
        """Reports that stopped (or started again) counting since the last call, by service."""
        changes = []
        for key, reports in self._by_service.items():
            fresh = frozenset(name for name, report in reports.items() if self._is_fresh(report, now))
            if fresh != self._fresh.get(key, frozenset()):
                self._fresh[key] = fresh
                changes.append(ReportChange(key, modules=None))
        return changes

    def _drop(self, ident: tuple[str, str], now: float) -> list[ReportChange]:
        self._unresolved.pop(ident, None)
        key = self._where.pop(ident, None)
        if key is None:
            return []
        reports = self._by_service.get(key, {})
        reports.pop(ident[1], None)
        counted = ident[1] in self._fresh.get(key, frozenset())
        if counted:
            self._mark(key, ident[1], fresh=False)
        if not reports:
            self._by_service.pop(key, None)
            self._fresh.pop(key, None)
        return [ReportChange(key, owners=True, modules=None if counted else frozenset())]

    def _mark(self, key: ServiceKey, name: str, *, fresh: bool) -> None:
        current = self._fresh.get(key, frozenset())
        self._fresh[key] = current | {name} if fresh else current - {name}

    def _is_fresh(self, report: RuntimeReport, now: float) -> bool:
        return report.heartbeat is not None and now - report.heartbeat <= self.ttl

    # --- reading ------------------------------------------------------------------------------

    def get(self, body: Mapping[str, Any]) -> RuntimeReport | None:
        """The report kept for this object (by its namespace and name), if any."""
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            return None
        ident = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        key = self._where.get(ident)
        return self._by_service.get(key, {}).get(ident[1]) if key is not None else None

    def services(self) -> set[ServiceKey]:
        return set(self._by_service)

    def reports(self, key: ServiceKey) -> list[RuntimeReport]:
        """Every report of the service (fresh or not), by pod: the active list's owners."""
        return sorted(self._by_service.get(key, {}).values(), key=lambda report: (report.pod, report.name))

    def snapshot(self, key: ServiceKey, now: float) -> ReportSnapshot:
        """The service's fresh reports, grouped by what they report; pods sorted by name."""
        groups: dict[int, ReportGroup] = {}
        count = 0
        for report in self.reports(key):
            if not self._is_fresh(report, now):
                continue
            count += 1
            group = groups.get(id(report.plugins))
            if group is None:
                group = groups[id(report.plugins)] = ReportGroup(report.plugins)
            group.pods.append(report.pod)
        return ReportSnapshot(list(groups.values()), count)

    def ages(self, now: float) -> dict[ServiceKey, tuple[int, int, float]]:
        """Per service: (fresh reports, stale reports, age in seconds of the oldest report)."""
        found = {}
        for key, reports in self._by_service.items():
            fresh = stale = 0
            oldest = 0.0
            for report in reports.values():
                if self._is_fresh(report, now):
                    fresh += 1
                else:
                    stale += 1
                if report.heartbeat is not None:
                    oldest = max(oldest, now - report.heartbeat)
            found[key] = (fresh, stale, oldest)
        return found

    def __len__(self) -> int:
        return len(self._where)

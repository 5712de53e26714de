"""Converging one service's ConfigMaps, statuses and active list on its LunaPlugins.

:meth:`ServiceReconciler.full_pass` reads the service's plugins and ConfigMaps from the view
(kopf's indexes: no API call), checks their code, decides (``desired.decide``) and writes what
differs: plugin ConfigMaps first, then the active list, then statuses. It is level-based:
running it twice changes nothing the second time, and it may be interrupted at any point and run
again. It runs when a desired input changes: a LunaPlugin, a ConfigMap it manages or reads
(``codeFrom``), the set of the service's sidecar reports (they own the active list).

:meth:`ServiceReconciler.status_pass` only brings ``status.loaded`` and ``status.pods`` in line
with the sidecars' reports, for the modules whose reports changed, using what the last full pass
decided; it never touches desired state. Reports that change nothing but their heartbeat cause
no pass at all.

One plugin never stops the others: a plugin whose code cannot be read or checked, or whose
ConfigMap the API server refuses, gets that reason in its status and the pass goes on. A pass
that met a failure that may go away by itself raises :class:`PassIncompleteError` at its end,
after doing everything else; the :class:`~luna_operator.scheduling.Coalescer` retries it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from luna_contract.active_list import ActiveEntry, ActiveListError, decode_active_list
from luna_contract.names import (
    LABEL_ROLE,
    MANAGED_BY_OPERATOR,
    ROLE_ACTIVE_LIST,
    active_list_key,
    active_list_name,
    canary_configmap_name,
    plugin_configmap_name,
)
from luna_operator.cluster_api import ClusterApi
from luna_operator.desired import CheckedCode, PluginOutcome, after_failed_write, bounded, decide
from luna_operator.errors import ApiError, PassIncompleteError, describe, is_transient
from luna_operator.events import EventRecorder
from luna_operator.metrics import PluginGauges
from luna_operator.records import PluginRecord
from luna_operator.render import (
    ExistingConfigMap,
    Owner,
    active_list,
    active_list_code_hashes,
    already_holds,
    plugin_configmap,
    read_plugin_configmap,
)
from luna_operator.reports import ReportBook, ReportChange
from luna_operator.rollout.planner import RolloutPlanner
from luna_operator.rollout.queries import QuerySource
from luna_operator.scheduling import PassKind
from luna_operator.secret_feed import SecretBook
from luna_operator.settings_delivery import SettingsDelivery
from luna_operator.status import PodsOfPlugin, StatusWriter, pods_of_plugin
from luna_operator.validation import CheckUnavailableError, CodeChecker
from luna_operator.view import ClusterView

__all__ = ["PassIncompleteError", "PassRequest", "ServiceReconciler", "listed_entries"]

log = logging.getLogger("luna.operator")

ServiceKey = tuple[str, str]
#: statuses written at once (each is one PATCH): a service-wide change writes many
STATUS_WRITERS = 8
#: sidecar reports that own a service's active list. Any one keeps the list alive while the
#: service's sidecars run; more would make every pod that starts or stops rewrite a list that
#: every sidecar of the service watches (owners at 1000 pods: 150 KB per list)
MAX_REPORT_OWNERS = 5
#: seconds after which a service whose writes the API server refused is passed over again
REFUSED_RETRY = 10.0
#: every status.loaded of a service is rewritten at most this often when pods start or stop
#: counting (the modules whose reports changed are written at once)
COUNTS_INTERVAL = 5.0
PassRequest = tuple[PassKind, float]
"""a pass the reconciler asks to run later: (kind, in seconds)"""


class ServiceReconciler:
    """Full and status passes over one service at a time (the caller serializes per service)."""

    def __init__(
        self,
        api: ClusterApi,
        view: ClusterView,
        reports: ReportBook,
        *,
        checker: CodeChecker | None = None,
        events: EventRecorder | None = None,
        reports_known: Callable[[], bool] = lambda: True,
        secrets: SecretBook | None = None,
        secrets_known: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        prometheus: QuerySource | None = None,
    ) -> None:
        self.api = api
        self.view = view
        self.reports = reports
        self.checker = checker or CodeChecker()
        self.status = StatusWriter(api)
        self.events = events or EventRecorder(api)
        self.reports_known = reports_known
        """whether the report book holds every report (its first LIST is done)"""
        self.blocked: set[tuple[str, str, str]] = set()
        """(namespace, kind, name) of objects the operator must write but another object holds
        the name of (a plugin's ConfigMap, an active list, a settings Secret)"""
        self.settings = SettingsDelivery(api, secrets or SecretBook(), secrets_known, blocked=self.blocked)
        self.clock = clock
        self.timer = timer
        self._outcomes: dict[ServiceKey, list[PluginOutcome]] = {}
        self._stale_modules: dict[ServiceKey, set[str]] = {}
        """modules whose reports changed since their statuses were written"""
        self._stale_counts: set[ServiceKey] = set()
        """services where pods started or stopped counting: every status.loaded is to write"""
        self._counts_written: dict[ServiceKey, float] = {}
        self._gauges: dict[str, PluginGauges] = {}
        self._refused = False
        self.full_passes = 0
        self.status_passes = 0
        self.rollouts = RolloutPlanner(prometheus)
        """staged rollouts (``spec.rollout``) of every service's plugins; their queries are asked
        of ``prometheus`` (None: the operator has none, and plugins with queries are invalid)"""

    # --- what changed -------------------------------------------------------------------------

    def note(self, change: ReportChange) -> PassKind | None:
        """Record a change of the reports; returns the pass it needs (None: none)."""
        if change.modules is None:
            self._stale_counts.add(change.service)
        elif change.modules:
            self._stale_modules.setdefault(change.service, set()).update(change.modules)
        if change.owners:
            return "full"
        return "status" if change.modules is None or change.modules else None

    def _take_stale(self, key: ServiceKey, *, full: bool) -> tuple[set[str] | None, float | None]:
        """The modules whose ``loaded``/``pods`` to write now (None: every module), and in how
        many seconds the others may be. Every status of a service is rewritten when pods start or
        stop counting, but at most every :data:`COUNTS_INTERVAL` seconds: while pods come and go,
        a service of 200 plugins would otherwise write 200 statuses per pod."""
        modules = self._stale_modules.pop(key, set())
        if key not in self._stale_counts:
            return (None if full else modules), None
        since = self.timer() - self._counts_written.get(key, -math.inf)
        if since >= COUNTS_INTERVAL:
            self._stale_counts.discard(key)
            self._counts_written[key] = self.timer()
            return None, None
        return modules, COUNTS_INTERVAL - since

    async def run(self, key: ServiceKey, kind: PassKind) -> PassRequest | None:
        """The pass the scheduler asks for; returns the pass to run later although nothing
        changes (statuses held back, a write the API server refused), else None."""
        if kind == "status" and key in self._outcomes:
            return await self.status_pass(key)
        return await self.full_pass(key)

    # --- full pass ----------------------------------------------------------------------------

    async def full_pass(self, key: ServiceKey) -> PassRequest | None:
        """Converge the service; raises :class:`PassIncompleteError` (after doing all it could)
        when something failed that a later pass may do. Returns a full pass in
        :data:`REFUSED_RETRY` seconds when the API server refused a write for good (an admission
        policy, a quota: they may change without an event the operator sees), a status pass when
        statuses were held back (see :meth:`_take_stale`), else None."""
        namespace, service = key
        current_list = self.view.config_map(namespace, active_list_name(service))
        self._learn_revision(key, current_list)
        selected, later = self._take_stale(key, full=True)
        previous = {o.plugin.uid: _shown_part(o) for o in self._outcomes.get(key, [])}
        self._refused = False
        plugins = self.view.plugins(key)
        live = [plugin for plugin in plugins if not plugin.deleting]
        codes = {plugin.name: await self._checked_code(plugin) for plugin in live}
        found = {
            plugin.name: body
            for plugin in live
            if (body := self.view.config_map(namespace, plugin_configmap_name(plugin.name))) is not None
        }
        existing = {name: read_plugin_configmap(body) for name, body in found.items()}
        for plugin in live:  # a plugin's ConfigMap name held by someone else's: reported
            held = (namespace, "ConfigMap", plugin_configmap_name(plugin.name))
            if plugin.name in existing and not existing[plugin.name].managed:
                self.blocked.add(held)
            else:
                self.blocked.discard(held)
        resolved = self.settings.resolve(live)
        outcomes = decide(
            plugins,
            codes,
            existing,
            listed_entries(current_list, service),
            resolved,
            prometheus=self.rollouts.prometheus is not None,
        )
        outcomes, rollout_wait = await self._plan_rollouts(key, outcomes, existing)
        outcomes = await self._write_plugin_configmaps(outcomes, found, existing)
        failures: list[str] = []
        owners = [("LunaPlugin", p.name, p.uid) for p in live] + self._report_owners(key, current_list)
        # the settings Secret before the list naming its hashes: a sidecar finds what it is told
        problem = await self.settings.write(namespace, service, outcomes, resolved, owners)
        if problem is not None:
            reason, transient = problem
            self._refused |= not transient
            outcomes = [
                _not_listed(o, reason, transient=transient)
                if o.active is not None and o.active.secret_settings_hash is not None
                else o
                for o in outcomes
            ]
        problem = await self._write_active_list(namespace, service, outcomes, owners, current_list)
        if problem is not None:
            reason, transient = problem
            outcomes = [
                o if o.active is None else _not_listed(o, reason, transient=transient) for o in outcomes
            ]
        counted = [
            o
            for o in outcomes
            if selected is None
            or o.serving_module in selected
            or previous.get(o.plugin.uid) != _shown_part(o)
        ]
        failures += await self._write_statuses(key, outcomes, counted)
        failures += [f"{o.plugin.name}: {o.message}" for o in outcomes if o.transient]
        gone = [o.plugin for o in outcomes if o.plugin.uid in self.status.gone]
        for plugin in gone:  # deleted, though the view still showed it: drop it from the list now
            self.view.forget(plugin.uid)
            failures.append(f"LunaPlugin {plugin.name!r} is gone")
        self._outcomes[key] = [o for o in outcomes if o.plugin.uid not in self.status.gone]
        if not outcomes:
            self._outcomes.pop(key, None)
        self.full_passes += 1
        if failures:
            raise PassIncompleteError(bounded("; ".join(failures)))
        if self._refused:
            return ("full", REFUSED_RETRY if rollout_wait is None else min(REFUSED_RETRY, rollout_wait))
        if rollout_wait is not None:
            return ("full", rollout_wait if later is None else min(rollout_wait, later))
        return ("status", later) if later is not None else None

    async def _plan_rollouts(
        self, key: ServiceKey, outcomes: list[PluginOutcome], existing: dict[str, ExistingConfigMap]
    ) -> tuple[list[PluginOutcome], float | None]:
        """Each plugin's outcome as its staged rollout allows (:mod:`luna_operator.rollout.planner`),
        its canary ConfigMap written or deleted, its Events posted; returns the outcomes and the
        seconds until a rollout needs the next full pass (None: none does)."""
        namespace = key[0]
        now = self.clock()
        snapshot = self.reports.snapshot(key, now)
        planned: list[PluginOutcome] = []
        wait: float | None = None
        # together: a Prometheus slow to answer one plugin's queries costs the pass its timeout
        # once, not once per plugin under a rollout
        plans = await asyncio.gather(
            *(
                self.rollouts.plan(outcome, existing.get(outcome.plugin.name), snapshot, now)
                for outcome in outcomes
            )
        )
        for outcome, plan in zip(outcomes, plans, strict=True):
            plugin = outcome.plugin
            canary_name = canary_configmap_name(plugin.name)
            current = self.view.config_map(namespace, canary_name)
            try:
                if plan.canary is not None:
                    body = plugin_configmap(
                        plugin=plugin.name,
                        uid=plugin.uid,
                        service=plan.canary.service,
                        module=plan.canary.module,
                        code=plan.canary.code,
                        code_hash=plan.canary.code_hash,
                        name=canary_name,
                    )
                    await self._apply_configmap(namespace, body, current)
                elif current is not None and _written_by_operator(current) and current.get("data"):
                    # no rollout under way: the canary ConfigMap keeps no code (it goes with the
                    # plugin; the operator may not delete ConfigMaps)
                    retired = plugin_configmap(
                        plugin=plugin.name,
                        uid=plugin.uid,
                        service=plugin.service,
                        module=outcome.module,
                        code="",
                        code_hash="",
                        name=canary_name,
                    )
                    retired["data"], retired["metadata"]["annotations"] = {}, {}
                    await self._apply_configmap(namespace, retired, current)
            except ApiError as exc:
                reason = f"ConfigMap {canary_name!r} could not be written: {describe(exc)}"
                log.warning("%s/%s: %s", namespace, plugin.name, reason, extra={"plugin": plugin.name})
                self._refused |= not is_transient(exc)
                if plan.canary is not None:  # no canary without its code: the version in service only
                    active = outcome.active if plan.outcome.active is None else plan.outcome.active
                    plan = replace(
                        plan,
                        outcome=replace(
                            plan.outcome,
                            active=replace(active, canary=None) if active is not None else None,
                            message=bounded(f"{plan.outcome.message}; {reason}"),
                        ),
                    )
            for kind, reason_text, message in plan.events:
                await self.events.post(plugin, kind, reason_text, message)
            if plan.rolled_back and self.events.metrics is not None:
                self.events.metrics.rollbacks.labels(namespace).inc()
            if plan.next_in is not None:
                wait = plan.next_in if wait is None else min(wait, plan.next_in)
            planned.append(plan.outcome)
        return planned, wait

    def _learn_revision(self, key: ServiceKey, active: dict[str, Any] | None) -> None:
        """Let the report book know the revision of the service's active list as the view holds
        it, so that no status is counted from reports it cannot read yet (after a restart, the
        reports may be listed before the ConfigMap's event reaches the handlers)."""
        found = active_list_code_hashes(active) if active is not None else None
        if found is not None and found[0] == key[1]:
            for change in self.reports.learn(key, found[1], now=self.clock()):
                self.note(change)

    async def _checked_code(self, plugin: PluginRecord) -> CheckedCode:
        """The plugin's code (inline or from ``codeFrom``) and the verdict of the code check."""
        fields = plugin.fields
        ref = fields.code_from
        if fields.has("code"):
            code = fields.code or ""
        elif ref is None:
            return CheckedCode(None, waiting="spec needs code or codeFrom.configMapKeyRef.{name,key}")
        else:
            name, key = ref.name, ref.key
            try:
                config_map = await self.api.read_config_map(plugin.namespace, str(name))
            except ApiError as exc:
                return CheckedCode(
                    None,
                    waiting=f"could not read ConfigMap {name!r} (spec.codeFrom): {describe(exc)}",
                    transient=is_transient(exc),
                )
            if config_map is None:
                return CheckedCode(None, waiting=f"ConfigMap {name!r} (spec.codeFrom) not found")
            data = config_map.get("data") or {}
            if key not in data:
                keys = bounded(str(sorted(data)), 300)
                return CheckedCode(None, waiting=f"ConfigMap {name!r} has no key {key!r} (keys: {keys})")
            code = str(data[key])
        try:
            problems = await self.checker.check(code, pinned_sha256=fields.sha256)
        except CheckUnavailableError as exc:
            return CheckedCode(None, waiting=str(exc), transient=True)
        except Exception as exc:  # not expected; still this plugin's problem only
            log.exception("code check of %s/%s", plugin.namespace, plugin.name)
            return CheckedCode(None, waiting=f"the code check failed: {type(exc).__name__}", transient=True)
        return CheckedCode(code, tuple(problems))

    async def _write_plugin_configmaps(
        self,
        outcomes: list[PluginOutcome],
        found: dict[str, dict[str, Any]],
        existing: dict[str, ExistingConfigMap],
    ) -> list[PluginOutcome]:
        """Write each plugin's ConfigMap where it differs from what ``outcome.stored`` wants;
        a plugin whose write fails falls back to what its ConfigMap still holds."""
        results = list(outcomes)
        for index, outcome in enumerate(results):
            stored, plugin = outcome.stored, outcome.plugin
            if stored is None:
                continue
            body = plugin_configmap(
                plugin=plugin.name,
                uid=plugin.uid,
                service=stored.service,
                module=stored.module,
                code=stored.code,
                code_hash=stored.code_hash,
            )
            try:
                written = await self._apply_configmap(plugin.namespace, body, found.get(plugin.name))
            except ApiError as exc:
                reason = f"ConfigMap {body['metadata']['name']!r} could not be written: {describe(exc)}"
                log.warning("%s/%s: %s", plugin.namespace, plugin.name, reason, extra={"plugin": plugin.name})
                self._refused |= not is_transient(exc)
                serving = {o.active.module for i, o in enumerate(results) if o.active and i != index}
                results[index] = after_failed_write(
                    outcome, reason, existing.get(plugin.name), serving, transient=is_transient(exc)
                )
                continue
            if written:
                log.info(
                    "rendered %s/%s (module %s, code %s, service %s)",
                    plugin.namespace,
                    body["metadata"]["name"],
                    stored.module,
                    stored.code_hash[:12],
                    stored.service,
                    extra={"plugin": plugin.name},
                )
        return results

    async def _apply_configmap(
        self, namespace: str, body: dict[str, Any], current: dict[str, Any] | None
    ) -> bool:
        """Create ``body``, or replace ``current`` with it; False when ``current`` already has its
        data, labels, annotations and owners. The view may lag: a create that meets an existing
        object, or a replace of one that is gone, is told to the view and retried by the next pass."""
        name = body["metadata"]["name"]
        blocked = (namespace, "ConfigMap", name)
        if current is None:
            try:
                stored = await self.api.create_config_map(namespace, body)
            except ApiError as exc:
                if exc.status == 409:  # it exists after all: show the view, decide again
                    there = await self.api.read_config_map(namespace, name)
                    if there is not None and not _written_by_operator(there):
                        # someone else's: never overwritten; tried again with backoff, so the
                        # service recovers once it is removed
                        self.blocked.add(blocked)
                        raise ApiError(
                            409,
                            "a ConfigMap of that name that the operator did not write exists: "
                            "delete or rename it",
                        ) from exc
                    if there is not None:
                        self.view.wrote(namespace, there, None)
                raise
            self.blocked.discard(blocked)
            self.view.wrote(namespace, stored, None)
            return True
        self.blocked.discard(blocked)
        if already_holds(current, body):
            return False
        replaced = str(current["metadata"].get("resourceVersion") or "")
        body["metadata"]["resourceVersion"] = replaced
        try:
            stored = await self.api.replace_config_map(namespace, name, body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            del body["metadata"]["resourceVersion"]  # gone meanwhile: create it again
            stored = await self.api.create_config_map(namespace, body)
        self.view.wrote(namespace, stored, replaced)
        return True

    def _report_owners(self, key: ServiceKey, current_list: dict[str, Any] | None) -> list[Owner]:
        """The sidecar reports that own the active list: at most :data:`MAX_REPORT_OWNERS` of
        those that exist, the ones it names already first (so a pod that comes or goes rarely
        rewrites a list every sidecar watches), or, while the reports are not all known yet,
        those it names already (so a restart never orphans it)."""
        references = ((current_list or {}).get("metadata") or {}).get("ownerReferences") or []
        named = [
            ("LunaPluginRuntime", str(ref.get("name")), str(ref.get("uid")))
            for ref in references
            if isinstance(ref, dict) and ref.get("kind") == "LunaPluginRuntime"
        ]
        if not self.reports_known():
            return named
        existing = [("LunaPluginRuntime", r.name, r.uid) for r in self.reports.reports(key) if r.uid]
        alive = set(existing)
        kept = [owner for owner in named if owner in alive][:MAX_REPORT_OWNERS]
        return kept + [owner for owner in existing if owner not in kept][: MAX_REPORT_OWNERS - len(kept)]

    async def _write_active_list(
        self,
        namespace: str,
        service: str,
        outcomes: list[PluginOutcome],
        owners: list[Owner],
        found: dict[str, Any] | None,
    ) -> tuple[str, bool] | None:
        """Write the service's active list over ``found`` (what there is now), owned by
        ``owners``; returns (reason, transient) when it could not be.

        It is never created for a service without plugins. With no owner left it is emptied but
        keeps the owners it had (gone now): the garbage collector deletes it."""
        name = active_list_name(service)
        entries = [o.active for o in outcomes if o.active is not None]
        body = active_list(service, entries, owners)
        if found is None and not any(kind == "LunaPlugin" for kind, _, _ in owners):
            return None
        if found is not None:
            if (found["metadata"].get("labels") or {}).get(LABEL_ROLE) != ROLE_ACTIVE_LIST:
                self.blocked.add((namespace, "ConfigMap", name))
                return (
                    f"ConfigMap {name!r} exists and was not written by the operator, so the active list "
                    "cannot be written: delete or rename that ConfigMap",
                    True,  # tried again with backoff: the service recovers once it is removed
                )
            if not owners:
                body["metadata"]["ownerReferences"] = found["metadata"].get("ownerReferences") or []
        try:
            written = await self._apply_configmap(namespace, body, found)
        except ApiError as exc:
            reason = f"the active list {name!r} could not be written: {describe(exc)}"
            log.warning("%s/%s: %s", namespace, service, reason)
            self._refused |= not is_transient(exc)
            return reason, is_transient(exc)
        if written:
            modules = json.loads(body["data"][active_list_key(service)])
            log.info(
                "active list of %s/%s: %d module(s): %s",
                namespace,
                service,
                len(modules),
                bounded(str(modules), 300),
            )
        return None

    # --- statuses -----------------------------------------------------------------------------

    async def status_pass(self, key: ServiceKey) -> PassRequest | None:
        """Bring ``loaded`` and ``pods`` in line with the reports, for the modules whose reports
        changed since the last pass (all of them when pods started or stopped counting, at most
        every :data:`COUNTS_INTERVAL` seconds: then it asks for the next status pass)."""
        outcomes = self._outcomes.get(key, [])
        selected, later = self._take_stale(key, full=False)
        chosen = outcomes if selected is None else [o for o in outcomes if o.serving_module in selected]
        failures = await self._write_statuses(key, chosen, chosen)
        self.status_passes += 1
        if failures:
            raise PassIncompleteError(bounded("; ".join(failures)))
        return ("status", later) if later is not None else None

    async def _write_statuses(
        self, key: ServiceKey, outcomes: list[PluginOutcome], counted: list[PluginOutcome]
    ) -> list[str]:
        """Write the statuses of ``outcomes`` (a few at a time), with ``loaded`` and ``pods``
        for those in ``counted`` (the others keep theirs), and announce what changed; returns
        what failed and may pass."""
        snapshot = self.reports.snapshot(key, self.clock()) if self.reports_known() else None
        recount = {o.plugin.uid for o in counted}
        slots = asyncio.Semaphore(STATUS_WRITERS)

        async def write(outcome: PluginOutcome) -> str | None:
            pods: PodsOfPlugin | None = None
            if snapshot is not None and outcome.plugin.uid in recount:
                pods = pods_of_plugin(outcome, snapshot)
            async with slots:
                error = await self.status.write(outcome, pods)
                if error is not None:
                    if not is_transient(error):
                        return None
                    # retried: this module's status is still to write
                    self._stale_modules.setdefault(key, set()).add(outcome.serving_module)
                    return f"status of {outcome.plugin.name}: {describe(error)}"
                plugin = outcome.plugin
                if plugin.uid in self.status.gone:
                    return None
                await self.events.phase(outcome)
                if pods is not None:
                    await self.events.pods(outcome, pods)
                    self._gauges[plugin.uid] = PluginGauges(
                        plugin.namespace, plugin.service, plugin.name, pods.outdated, pods.failing
                    )
                return None

        return [failure for failure in await asyncio.gather(*map(write, outcomes)) if failure]

    # --- what the metrics read ----------------------------------------------------------------

    def phases(self) -> dict[str, int]:
        """LunaPlugins by the phase their last full pass decided."""
        counts: dict[str, int] = {}
        for outcomes in self._outcomes.values():
            for outcome in outcomes:
                counts[outcome.phase] = counts.get(outcome.phase, 0) + 1
        return counts

    def plugin_gauges(self) -> list[PluginGauges]:
        """Each LunaPlugin's outdated and failing pods, as its last status computation found them."""
        return list(self._gauges.values())

    def forget(self, uid: str) -> None:
        """A LunaPlugin was deleted: drop what was remembered of it."""
        self.rollouts.forget(uid)
        self.status.forget(uid)
        self.events.forget(uid)
        self._gauges.pop(uid, None)


def listed_entries(active_list_body: dict[str, Any] | None, service: str) -> dict[str, ActiveEntry]:
    """The entry an active list (as the API returns it) has for each plugin, by plugin name;
    empty when there is none or it is not the operator's or cannot be read (then a refused change
    has no last good settings to keep, and the list is written anew)."""
    meta = (active_list_body or {}).get("metadata") or {}
    if active_list_body is None or (meta.get("labels") or {}).get(LABEL_ROLE) != ROLE_ACTIVE_LIST:
        return {}
    try:
        entries = decode_active_list(str(meta.get("name")), active_list_body.get("data") or {}, service)
    except ActiveListError:
        return {}
    return {entry.plugin: entry for entry in entries if entry.plugin is not None}


def _shown_part(outcome: PluginOutcome) -> tuple[object, ...]:
    """What of an outcome a status shows apart from ``loaded`` and ``pods``."""
    return (
        outcome.phase,
        outcome.message,
        outcome.code_hash,
        outcome.serving_module,
        outcome.plugin.generation,
    )


def _written_by_operator(body: dict[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/managed-by") == MANAGED_BY_OPERATOR)


def _not_listed(outcome: PluginOutcome, reason: str, *, transient: bool) -> PluginOutcome:
    """A plugin that should be served while the active list could not be written."""
    phase = "Pending" if outcome.phase == "Ready" else outcome.phase
    message = f"{outcome.message}; {reason}" if outcome.message else reason
    return replace(outcome, phase=phase, message=bounded(message), transient=outcome.transient or transient)

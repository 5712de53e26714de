"""Converging one service's ConfigMaps, statuses and active list on its LunaPlugins.

``ServiceReconciler.reconcile`` reads the plugins of (namespace, service) from the store,
reads and checks their code, decides (``desired.decide``) and writes: plugin ConfigMaps first,
then the active list, then statuses. It is level-based: running it twice changes nothing the
second time, and it may be interrupted at any point and run again.

One plugin never stops the others: a plugin whose code cannot be read or checked, or whose
ConfigMap the API server refuses, gets that reason in its status and the pass goes on, so the
active list and every other status are still written. A pass that met a failure that may go away
by itself (the API unreachable, a conflict) raises :class:`PassIncompleteError` at its end, after
doing everything else; ``Coalescer`` then runs it again with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from luna_operator.desired import CheckedCode, PluginOutcome, after_failed_write, bounded, decide
from luna_operator.render import (
    LABEL_ROLE,
    PLUGINS_KEY,
    ExistingConfigMap,
    Owner,
    active_list,
    active_list_name,
    plugin_configmap,
    plugin_configmap_name,
    read_plugin_configmap,
)
from luna_operator.status import GROUP, PLURAL, VERSION, StatusWriter, loaded_status
from luna_operator.store import PluginRecord, PluginStore
from luna_operator.validation import CheckUnavailableError, CodeChecker

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "Coalescer",
    "PassIncompleteError",
    "ServiceReconciler",
    "loaded_status",
]

log = logging.getLogger("luna.operator")

RUNTIMES = "lunapluginruntimes"
#: a sidecar report older than this no longer counts (sidecars refresh theirs every 10 s)
STALE_AFTER_SECONDS = 30.0
ServiceKey = tuple[str, str]


class PassIncompleteError(RuntimeError):
    """Some of a pass could not be done for a reason that may go away by itself; everything
    else was done. The message lists what failed."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed API call may succeed when tried again: a conflict, throttling, a server
    error or no answer at all; other 4xx answers are the API server's final word."""
    if isinstance(exc, ApiException):
        return exc.status in (409, 429) or not exc.status or exc.status >= 500
    return True


def describe(exc: BaseException) -> str:
    """An API failure in a few words: the status and the API server's message, if any."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        return f"HTTP {exc.status}: {message}"
    return f"{type(exc).__name__}: {exc}"


class ServiceReconciler:
    """Writes what ``decide`` wants for one service; every call is a full, idempotent pass."""

    def __init__(
        self,
        api: client.ApiClient,
        store: PluginStore,
        *,
        checker: CodeChecker | None = None,
        reporter: str = "luna-plugins-operator",
        stale_after: float = STALE_AFTER_SECONDS,
    ) -> None:
        self.stale_after = stale_after
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api
        self.store = store
        self.checker = checker or CodeChecker()
        self.status = StatusWriter(api, reporter=reporter)
        self.passes = 0

    async def reconcile(self, key: ServiceKey) -> None:
        """One full pass over the service; raises :class:`PassIncompleteError` (after doing all it
        could) when something failed that a later pass may do."""
        namespace, service = key
        plugins = self.store.of_service(namespace, service)
        live = [plugin for plugin in plugins if not plugin.deleting]
        codes = {plugin.name: await self._checked_code(plugin) for plugin in live}
        found = await self._plugin_configmaps(namespace, service, live)
        existing = {name: read_plugin_configmap(body) for name, body in found.items()}
        current_list, problem = await self._read_active_list(namespace, service)
        outcomes = decide(plugins, codes, existing, listed_entries(current_list))
        outcomes = await self._write_plugin_configmaps(outcomes, found, existing)
        failures: list[str] = []
        runtimes = await self._runtimes(namespace, service, failures)
        if problem is None:
            owners = [("LunaPlugin", p.name, p.uid) for p in live] + _runtime_owners(runtimes, current_list)
            problem = await self._write_active_list(namespace, service, outcomes, owners, current_list)
        if problem is not None:
            reason, transient = problem
            outcomes = [
                o if o.active is None else _not_listed(o, reason, transient=transient) for o in outcomes
            ]
        reports = self._fresh(runtimes, service) if runtimes is not None else None
        for outcome in outcomes:
            error = await self.status.write(outcome, reports)
            if error is not None and is_transient(error):
                failures.append(f"status of {outcome.plugin.name}: {describe(error)}")
        failures += [f"{o.plugin.name}: {o.message}" for o in outcomes if o.transient]
        self.passes += 1
        if failures:
            raise PassIncompleteError(bounded("; ".join(failures)))

    async def _checked_code(self, plugin: PluginRecord) -> CheckedCode:
        """The plugin's code (inline or from ``codeFrom``) and the verdict of the code check."""
        if "code" in plugin.spec:
            code = str(plugin.spec.get("code") or "")
        else:
            ref = (plugin.spec.get("codeFrom") or {}).get("configMapKeyRef") or {}
            name, key = ref.get("name"), ref.get("key")
            if not name or not key:
                return CheckedCode(None, waiting="spec needs code or codeFrom.configMapKeyRef.{name,key}")
            try:
                config_map = await self.core.read_namespaced_config_map(name, plugin.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return CheckedCode(None, waiting=f"ConfigMap {name!r} (spec.codeFrom) not found")
                return CheckedCode(
                    None,
                    waiting=f"could not read ConfigMap {name!r} (spec.codeFrom): {describe(exc)}",
                    transient=is_transient(exc),
                )
            except Exception as exc:
                return CheckedCode(None, waiting=f"could not read ConfigMap {name!r}: {exc}", transient=True)
            data = config_map.data or {}
            if key not in data:
                keys = bounded(str(sorted(data)), 300)
                return CheckedCode(None, waiting=f"ConfigMap {name!r} has no key {key!r} (keys: {keys})")
            code = str(data[key])
        try:
            problems = await self.checker.check(code, pinned_sha256=plugin.spec.get("sha256"))
        except CheckUnavailableError as exc:
            return CheckedCode(None, waiting=str(exc), transient=True)
        except Exception as exc:  # not expected; still this plugin's problem only
            log.exception("code check of %s/%s", plugin.namespace, plugin.name)
            return CheckedCode(None, waiting=f"the code check failed: {type(exc).__name__}", transient=True)
        return CheckedCode(code, tuple(problems))

    async def _plugin_configmaps(
        self, namespace: str, service: str, plugins: list[PluginRecord]
    ) -> dict[str, dict[str, Any]]:
        """The ConfigMap named like each plugin's (``lunaplugin-<name>``), as the API returns it,
        by plugin name: one LIST of the service's, then a GET for each plugin not found there
        (it moved here from another service, or its name is taken by a ConfigMap of someone else)."""
        listed = await self.core.list_namespaced_config_map(
            namespace, label_selector=f"{LABEL_ROLE}=plugin-code,luna.dev/service={service}"
        )
        by_name = {item.metadata.name: self.api.sanitize_for_serialization(item) for item in listed.items}
        found: dict[str, dict[str, Any]] = {}
        for plugin in plugins:
            name = plugin_configmap_name(plugin.name)
            if name in by_name:
                found[plugin.name] = by_name[name]
                continue
            try:
                item = await self.core.read_namespaced_config_map(name, namespace)
            except ApiException as exc:
                if exc.status in (404, 422):  # 422: a name no ConfigMap can have
                    continue
                raise
            found[plugin.name] = self.api.sanitize_for_serialization(item)
        return found

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
            except Exception as exc:
                reason = f"ConfigMap {body['metadata']['name']!r} could not be written: {describe(exc)}"
                log.warning("%s/%s: %s", plugin.namespace, plugin.name, reason)
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
                )
        return results

    async def _apply_configmap(
        self, namespace: str, body: dict[str, Any], current: dict[str, Any] | None
    ) -> bool:
        """Create ``body``, or replace ``current`` with it; False when ``current`` already has
        its data, labels, annotations and owners."""
        if current is None:
            await self.core.create_namespaced_config_map(namespace, body)
            return True
        if _same(current, body):
            return False
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.core.replace_namespaced_config_map(body["metadata"]["name"], namespace, body)
        return True

    async def _read_active_list(
        self, namespace: str, service: str
    ) -> tuple[dict[str, Any] | None, tuple[str, bool] | None]:
        """The service's active list as the API returns it (None: there is none), or why it could
        not be read as (reason, transient)."""
        name = active_list_name(service)
        try:
            current = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            return None, (f"the active list {name!r} could not be read: {describe(exc)}", is_transient(exc))
        except Exception as exc:
            return None, (f"the active list {name!r} could not be read: {describe(exc)}", True)
        return self.api.sanitize_for_serialization(current), None

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
            if (found["metadata"].get("labels") or {}).get(LABEL_ROLE) != "active-list":
                return (
                    f"ConfigMap {name!r} exists and was not written by the operator, so the active list "
                    "cannot be written: delete or rename that ConfigMap",
                    False,
                )
            if not owners:
                body["metadata"]["ownerReferences"] = found["metadata"].get("ownerReferences") or []
        try:
            written = await self._apply_configmap(namespace, body, found)
        except Exception as exc:
            reason = f"the active list {name!r} could not be written: {describe(exc)}"
            log.warning("%s/%s: %s", namespace, service, reason)
            return reason, is_transient(exc)
        if written:
            modules = json.loads(next(iter(body["data"].values())))
            log.info("active list of %s/%s: %s", namespace, service, modules)
        return None

    async def _runtimes(
        self, namespace: str, service: str, failures: list[str]
    ) -> list[dict[str, Any]] | None:
        """The service's sidecar reports (LunaPluginRuntimes), as the API returns them; None (and
        a failure noted) when they could not be read."""
        try:
            found = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, RUNTIMES, label_selector=f"luna.dev/service={service}"
            )
        except Exception as exc:
            failures.append(f"sidecar reports: {describe(exc)}")
            return None
        return [item for item in found.get("items", []) if isinstance(item, dict)]

    def _fresh(self, runtimes: list[dict[str, Any]], service: str) -> list[dict[str, Any]]:
        """The reports of ``service`` refreshed within ``stale_after`` seconds, by pod."""
        now = datetime.now(UTC)
        fresh = []
        for item in runtimes:
            spec = item.get("spec") or {}
            try:
                beat = datetime.fromisoformat(str(spec.get("heartbeatTime")).replace("Z", "+00:00"))
                age = (now - beat).total_seconds()
            except (ValueError, TypeError):
                continue
            if age <= self.stale_after and spec.get("service") == service:
                fresh.append(spec)
        return sorted(fresh, key=lambda spec: str(spec.get("pod")))


def _runtime_owners(
    runtimes: list[dict[str, Any]] | None, current_list: dict[str, Any] | None
) -> list[Owner]:
    """The sidecar reports that own the active list: those that exist, or, when they could not be
    read, those it names already (so an API hiccup never orphans it)."""
    if runtimes is not None:
        return [
            ("LunaPluginRuntime", str(item["metadata"]["name"]), str(item["metadata"]["uid"]))
            for item in runtimes
            if (item.get("metadata") or {}).get("uid")
        ]
    references = ((current_list or {}).get("metadata") or {}).get("ownerReferences") or []
    return [
        ("LunaPluginRuntime", str(ref["name"]), str(ref["uid"]))
        for ref in references
        if ref.get("kind") == "LunaPluginRuntime"
    ]


def listed_entries(active_list_body: dict[str, Any] | None) -> dict[str, Any]:
    """The entry (``settings``, ``requirements``) an active list (as the API returns it) has for
    each plugin, by plugin name; empty when there is none or it cannot be read."""
    if (
        active_list_body is None
        or (active_list_body["metadata"].get("labels") or {}).get(LABEL_ROLE) != "active-list"
    ):
        return {}
    try:
        details = json.loads((active_list_body.get("data") or {}).get(PLUGINS_KEY) or "{}")
    except ValueError:
        return {}
    listed: dict[str, Any] = {}
    if isinstance(details, dict):
        for entry in details.values():
            if isinstance(entry, dict) and isinstance(entry.get("settings"), dict):
                requirements = entry.get("requirements")
                listed[str(entry.get("plugin"))] = {
                    "settings": entry["settings"],
                    "requirements": requirements if isinstance(requirements, list) else [],
                }
    return listed


def _same(current: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether ``current`` already has ``body``'s data and our labels, annotations and owners."""
    meta, wanted = current.get("metadata") or {}, body["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return (
        (current.get("data") or {}) == body["data"]
        and all(labels.get(k) == v for k, v in wanted["labels"].items())
        and all(annotations.get(k) == v for k, v in wanted.get("annotations", {}).items())
        and (meta.get("ownerReferences") or []) == wanted.get("ownerReferences", [])
    )


def _not_listed(outcome: PluginOutcome, reason: str, *, transient: bool) -> PluginOutcome:
    """A plugin that should be served while the active list could not be written."""
    phase = "Pending" if outcome.phase == "Ready" else outcome.phase
    message = f"{outcome.message}; {reason}" if outcome.message else reason
    return replace(outcome, phase=phase, message=bounded(message), transient=outcome.transient or transient)


class Coalescer:
    """Runs ``work(key)`` for each triggered key, one run per key at a time: triggers that arrive
    while a run is under way cause exactly one more run; failures retry with backoff."""

    def __init__(
        self, work: Callable[[ServiceKey], Awaitable[None]], *, delay: float = 0.05, max_backoff: float = 30.0
    ) -> None:
        self._work = work
        self._delay = delay
        self._max_backoff = max_backoff
        self._dirty: set[ServiceKey] = set()
        self._tasks: dict[ServiceKey, asyncio.Task[None]] = {}
        self._locks: dict[ServiceKey, asyncio.Lock] = {}

    def trigger(self, key: ServiceKey) -> None:
        """Schedule a run for ``key`` (merged with any run not yet started)."""
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"luna-reconcile-{key[0]}-{key[1]}")

    def _lock(self, key: ServiceKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _run(self, key: ServiceKey) -> None:
        backoff = 0.5
        try:
            while key in self._dirty:
                await asyncio.sleep(self._delay)
                self._dirty.discard(key)
                try:
                    async with self._lock(key):
                        await self._work(key)
                    backoff = 0.5
                except Exception as exc:
                    log.warning("reconcile of %s/%s failed, retrying in %.1f s: %s", *key, backoff, exc)
                    self._dirty.add(key)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
        finally:
            self._tasks.pop(key, None)

    async def stop(self) -> None:
        """Cancel every scheduled or running pass (shutdown: the API session is about to close)."""
        self._dirty.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

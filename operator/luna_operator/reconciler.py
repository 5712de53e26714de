"""Converging one service's ConfigMaps, statuses and active list on its LunaPlugins.

``ServiceReconciler.reconcile`` reads the plugins of (namespace, service) from the store,
resolves their code, decides (``desired.decide``) and writes: plugin ConfigMaps first, then
the active list, then statuses. It is level-based: running it twice changes nothing the second
time, and it may be interrupted at any point and run again. ``Coalescer`` runs it per service,
merging bursts of triggers and retrying failures with backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from luna_operator.desired import PluginOutcome, ResolvedCode, decide
from luna_operator.render import (
    ANNOTATION_HASH,
    active_list,
    plugin_configmap,
    plugin_configmap_name,
)
from luna_operator.store import PluginRecord, PluginStore

log = logging.getLogger("luna.operator")

GROUP, VERSION, PLURAL = "luna.dev", "v1alpha1", "lunaplugins"
RUNTIMES = "lunapluginruntimes"
#: a sidecar report older than this no longer counts (sidecars refresh theirs every 10 s)
STALE_AFTER_SECONDS = 30.0
ServiceKey = tuple[str, str]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ServiceReconciler:
    """Writes what ``decide`` wants for one service; every call is a full, idempotent pass."""

    def __init__(
        self,
        api: client.ApiClient,
        store: PluginStore,
        *,
        reporter: str = "luna-plugins-operator",
        stale_after: float = STALE_AFTER_SECONDS,
    ) -> None:
        self.stale_after = stale_after
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.store = store
        self.reporter = reporter
        self.passes = 0
        # the last status written per plugin uid: the watch may not have shown it to the store yet
        self._written: dict[str, dict[str, Any]] = {}

    async def reconcile(self, key: ServiceKey) -> None:
        namespace, service = key
        plugins = self.store.of_service(namespace, service)
        codes = {p.name: await self._resolve_code(p) for p in plugins if not p.deleting}
        existing = await self._existing_hashes(namespace, service)
        outcomes = decide(plugins, codes, existing)
        for outcome in outcomes:
            if outcome.code is not None and existing.get(outcome.plugin.name) != outcome.code_hash:
                await self._write_plugin_configmap(outcome)
        await self._write_active_list(namespace, service, [o.active for o in outcomes if o.active])
        reports = await self._fresh_reports(namespace, service)
        for outcome in outcomes:
            await self._write_status(outcome, loaded_status(outcome, reports))
        self.passes += 1

    async def _resolve_code(self, plugin: PluginRecord) -> ResolvedCode:
        if "code" in plugin.spec:
            return ResolvedCode(str(plugin.spec.get("code") or ""))
        ref = (plugin.spec.get("codeFrom") or {}).get("configMapKeyRef") or {}
        name, key = ref.get("name"), ref.get("key")
        if not name or not key:
            return ResolvedCode(None, "spec needs code or codeFrom.configMapKeyRef.{name,key}")
        try:
            config_map = await self.core.read_namespaced_config_map(name, plugin.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ResolvedCode(None, f"ConfigMap {name!r} (spec.codeFrom) not found")
            raise
        data = config_map.data or {}
        if key not in data:
            return ResolvedCode(None, f"ConfigMap {name!r} has no key {key!r} (keys: {sorted(data)})")
        return ResolvedCode(data[key])

    async def _existing_hashes(self, namespace: str, service: str) -> dict[str, str]:
        """The code hash of each plugin's current ConfigMap, by plugin name."""
        found = await self.core.list_namespaced_config_map(
            namespace, label_selector=f"luna.dev/role=plugin-code,luna.dev/service={service}"
        )
        hashes = {}
        for item in found.items:
            plugin = (item.metadata.labels or {}).get("luna.dev/plugin")
            digest = (item.metadata.annotations or {}).get(ANNOTATION_HASH)
            if plugin and digest:
                hashes[plugin] = digest
        # a plugin that moved here from another service still has its ConfigMap
        for plugin in self.store.of_service(namespace, service):
            if plugin.name not in hashes:
                digest = await self._configmap_hash(namespace, plugin_configmap_name(plugin.name))
                if digest:
                    hashes[plugin.name] = digest
        return hashes

    async def _configmap_hash(self, namespace: str, name: str) -> str | None:
        try:
            item = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return (item.metadata.annotations or {}).get(ANNOTATION_HASH)

    async def _write_plugin_configmap(self, outcome: PluginOutcome) -> None:
        plugin = outcome.plugin
        assert outcome.code is not None and outcome.code_hash is not None
        body = plugin_configmap(
            plugin=plugin.name,
            uid=plugin.uid,
            service=plugin.service,
            module=outcome.module,
            code=outcome.code,
            code_hash=outcome.code_hash,
        )
        await self._apply_configmap(plugin.namespace, body)
        log.info(
            "rendered %s/%s (code %s)", plugin.namespace, body["metadata"]["name"], outcome.code_hash[:12]
        )

    async def _apply_configmap(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create or replace ``body``; returns False when it already had that content."""
        name = body["metadata"]["name"]
        try:
            current = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self.core.create_namespaced_config_map(namespace, body)
            return True
        if (
            (current.data or {}) == body["data"]
            and all(
                (current.metadata.labels or {}).get(k) == v for k, v in body["metadata"]["labels"].items()
            )
            and all(
                (current.metadata.annotations or {}).get(k) == v
                for k, v in body["metadata"].get("annotations", {}).items()
            )
        ):
            return False
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await self.core.replace_namespaced_config_map(name, namespace, body)
        return True

    async def _write_active_list(self, namespace: str, service: str, entries: list[Any]) -> None:
        body = active_list(service, entries)
        if await self._apply_configmap(namespace, body):
            modules = json.loads(next(iter(body["data"].values())))
            log.info("active list of %s/%s: %s", namespace, service, modules)

    async def _fresh_reports(self, namespace: str, service: str) -> list[dict[str, Any]]:
        """The sidecar reports of the service refreshed within :data:`STALE_AFTER_SECONDS`."""
        found = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, RUNTIMES, label_selector=f"luna.dev/service={service}"
        )
        now = datetime.now(UTC)
        fresh = []
        for item in found.get("items", []):
            spec = item.get("spec") or {}
            try:
                beat = datetime.fromisoformat(str(spec.get("heartbeatTime")).replace("Z", "+00:00"))
            except ValueError:
                continue
            if (now - beat).total_seconds() <= self.stale_after and spec.get("service") == service:
                fresh.append(spec)
        return sorted(fresh, key=lambda spec: str(spec.get("pod")))

    async def _write_status(self, outcome: PluginOutcome, loaded: dict[str, Any]) -> None:
        plugin = outcome.plugin
        current = plugin.status
        ready = outcome.phase == "Ready"
        condition: dict[str, Any] = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": outcome.phase,
            "message": outcome.message or "the code is valid and in the service's active list",
            "observedGeneration": plugin.generation,
        }
        previous: dict[str, Any] = next(
            (c for c in current.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        same_condition = all(previous.get(k) == v for k, v in condition.items())
        # the transition time moves only when the condition's status flips
        flipped = previous.get("status") != condition["status"] or not previous.get("lastTransitionTime")
        condition["lastTransitionTime"] = _now() if flipped else previous["lastTransitionTime"]
        failing = [pod for pod in loaded.get("pods", []) if pod.get("error")]
        message = outcome.message
        if failing and outcome.phase == "Ready":
            first = failing[0]
            message = f"{len(failing)} pod(s) report an error: {first['pod']}: {first['error']}"
        desired = {
            "phase": outcome.phase,
            "message": message,
            "module": outcome.module,
            "codeHash": outcome.code_hash,
            "configMap": plugin_configmap_name(plugin.name) if outcome.code_hash else None,
            "observedGeneration": plugin.generation,
            "conditions": [condition],
            **loaded,
        }
        comparable = {**desired, "conditions": [{**condition, "lastTransitionTime": None}]}
        if self._written.get(plugin.uid) == comparable:
            return  # we wrote exactly this already; the store has not caught up yet
        if same_condition and all(current.get(k) == v for k, v in desired.items() if k != "conditions"):
            self._written[plugin.uid] = comparable
            return
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                plugin.namespace,
                PLURAL,
                plugin.name,
                {"status": desired},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing to report on
            raise
        previous_phase = (self._written.get(plugin.uid) or current).get("phase")
        self._written[plugin.uid] = comparable
        if previous_phase != outcome.phase:
            kind = "Warning" if outcome.phase in ("Invalid", "Pending") else "Normal"
            await self.post_event(
                plugin, kind, outcome.phase, outcome.message or f"module {outcome.module} is active"
            )

    async def post_event(self, plugin: PluginRecord, kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the LunaPlugin, for `kubectl describe` (best effort)."""
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{plugin.name}.", "namespace": plugin.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "LunaPlugin",
                "name": plugin.name,
                "namespace": plugin.namespace,
                "uid": plugin.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.reporter},
            "reportingComponent": self.reporter,
            "reportingInstance": self.reporter,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            await self.core.create_namespaced_event(plugin.namespace, body)
        except ApiException as exc:  # events inform; they never fail a reconcile
            log.debug("could not post an event for %s/%s: %s", plugin.namespace, plugin.name, exc.reason)


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

    async def run_now(self, key: ServiceKey) -> None:
        """Run ``work(key)`` now, after any run under way; exceptions propagate (kopf retries)."""
        async with self._lock(key):
            await self._work(key)

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


def loaded_status(outcome: PluginOutcome, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """``loaded`` ("pods running the version in service / pods of the service") and ``pods``
    (each pod's hash, state and error for this plugin's module), from fresh sidecar reports."""
    pods = []
    running = 0
    for report in reports:
        mine = next((p for p in report.get("plugins") or [] if p.get("module") == outcome.module), None)
        entry: dict[str, Any] = {"pod": report.get("pod"), "state": mine.get("state") if mine else "absent"}
        if mine:
            entry["codeHash"] = mine.get("codeHash")
            if mine.get("error"):
                entry["error"] = mine["error"]
        if mine and mine.get("state") == "running" and mine.get("codeHash") == outcome.code_hash:
            running += 1
        pods.append(entry)
    return {"loaded": f"{running}/{len(reports)}", "pods": pods[:50]}

"""Cluster mode's desired state: the service's active list and plugin ConfigMaps, from the API.

``ConfigMapMirror`` keeps a copy of the ConfigMaps labelled for the service: one LIST, then a
WATCH from its resourceVersion with paired timeouts (the server closes a quiet watch after
``server_timeout``; the client gives up after ``client_timeout``), a fresh LIST on 410 Gone and
on silence, and backoff on errors. ``desired_plugins`` turns the mirror into the runtime's
desired list, taking a module's code only when its ConfigMap holds exactly the hash the active
list names: a half-propagated update (or code written by anyone but the operator) keeps the
running version instead. An active list that is not what the operator writes is ignored, with
the last good state kept, and reported once (``ClusterWatcher.problems``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from luna_contract.active_list import ActiveListError, code_of, decode_active_list
from luna_contract.names import active_list_name
from luna_sidecar.desired import DesiredPlugin, PluginSource, SecretSettingsDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirroredConfigMap:
    name: str
    data: Mapping[str, str]
    annotations: Mapping[str, str]


__all__ = [
    "ClusterWatcher",
    "ConfigMapMirror",
    "DesiredState",
    "MirroredConfigMap",
    "desired_plugins",
]


@dataclass(frozen=True)
class DesiredState:
    """What the mirror asks for now.

    ``plugins`` is None when there is nothing usable to converge on (no active list yet, or a
    broken one: then ``problems`` says why), so nothing is unloaded. ``waiting`` maps modules
    whose named code has not arrived (or does not match) to the reason; their running version,
    if any, stays in ``plugins``. ``code_hashes`` is what the usable active list names (module ->
    code hash; None with ``plugins``), what the sidecar's report is written against.
    """

    plugins: list[DesiredPlugin] | None
    waiting: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    code_hashes: dict[str, str] | None = None
    rollouts: frozenset[str] = frozenset()
    """modules under a staged rollout (their entries carry a canary): reported with figures"""
    runs_canary: bool = False
    """this pod runs some plugin's canary: its reports list every module (the operator does not
    know the revision of the list as this pod reads it)"""


def desired_plugins(
    service: str,
    config_maps: Mapping[str, MirroredConfigMap],
    current: Callable[[str], PluginSource | None],
    secrets: SecretSettingsDir | None = None,
    pod: str | None = None,
) -> DesiredState:
    """The desired plugins of ``service`` from the mirrored ConfigMaps and, for plugins with
    secret settings, the mounted settings Secret (``secrets``). A plugin under a staged rollout
    is wanted at its canary's version when the canary names ``pod`` (this sidecar's pod), at the
    version in service otherwise; ``code_hashes`` says which."""
    name = active_list_name(service)
    active = config_maps.get(name)
    if active is None:
        return DesiredState(None)
    try:
        listed = decode_active_list(name, active.data, service)
    except ActiveListError as exc:
        return DesiredState(None, problems=[f"{exc}; keeping the plugins that run"])
    entries = [entry.for_pod(pod) for entry in listed]
    rollouts = frozenset(entry.module for entry in listed if entry.canary is not None)
    desired: list[DesiredPlugin] = []
    waiting: dict[str, str] = {}
    for entry in entries:
        holder = config_maps.get(entry.config_map)
        code, why_not = code_of(entry, holder.data if holder is not None else None)
        settings: Mapping[str, Any] | None = entry.settings
        if code is not None and entry.secret_settings_hash is not None:
            values, why_not = (secrets or SecretSettingsDir(None)).read(
                entry.module, entry.secret_settings_hash
            )
            settings = None if values is None else {**entry.settings, **values}
        if code is not None and settings is not None:
            origin = f"configmap/{entry.config_map}/{entry.code_key}"
            source = PluginSource(
                entry.module,
                code,
                origin,
                settings,
                entry.code_hash,
                requirements=entry.requirements,
                delivery=entry.delivery,
                isolation=entry.isolation,
            )
            desired.append(DesiredPlugin(entry.module, source))
            continue
        waiting[entry.module] = why_not or "code not found"
        running = current(entry.module)
        if running is not None:  # keep serving what runs until the named version arrives
            desired.append(DesiredPlugin(entry.module, running))
    return DesiredState(
        desired,
        waiting,
        code_hashes={entry.module: entry.code_hash for entry in entries},
        rollouts=rollouts,
        runs_canary=any(entry.canary is not None and pod in entry.canary.pods for entry in listed),
    )


class ConfigMapMirror:
    """A live copy of the ConfigMaps matching ``selector`` in ``namespace``.

    ``changed`` is called after every change; ``last_contact`` (monotonic) is the last time the
    API answered, for liveness; ``synced`` is set after the first complete LIST.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        changed: Callable[[], None],
        *,
        server_timeout: int = 60,
        client_timeout: float = 66.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.changed = changed
        self.server_timeout = server_timeout
        self.client_timeout = client_timeout
        self.items: dict[str, MirroredConfigMap] = {}
        self.synced = asyncio.Event()
        self.last_contact = time.monotonic()
        self.lists = 0

    async def run(self) -> None:
        """Mirror forever (cancel to stop). Never raises for API trouble: it retries."""
        backoff = 0.5
        while True:
            try:
                version: str | None = await self._list()
                backoff = 0.5
                while version is not None:  # None: 410 Gone or silence, so list again
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Kubernetes API unavailable (%s); retrying in %.1f s", _short(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)

    async def _list(self) -> str:
        result = await self.core.list_namespaced_config_map(
            self.namespace, label_selector=self.selector, _request_timeout=self.client_timeout
        )
        self.items = {item.metadata.name: _mirror(item) for item in result.items}
        self.last_contact = time.monotonic()
        self.lists += 1
        self.synced.set()
        self.changed()
        return str(result.metadata.resource_version)

    async def _watch(self, version: str) -> str | None:
        """Follow changes from ``version``; returns the version to resume from, or None to re-list."""
        stream = watch.Watch().stream(
            self.core.list_namespaced_config_map,
            self.namespace,
            label_selector=self.selector,
            resource_version=version,
            timeout_seconds=self.server_timeout,
            allow_watch_bookmarks=True,
            _request_timeout=self.client_timeout,
        )
        try:
            async with stream:
                async for event in stream:
                    self.last_contact = time.monotonic()
                    kind, item = event["type"], event["object"]
                    if kind == "ERROR":
                        code = getattr(item, "code", None) or (
                            item.get("code") if isinstance(item, dict) else None
                        )
                        if code == 410:
                            return None
                        raise RuntimeError(f"watch error: {item}")
                    if kind == "BOOKMARK":  # its object is a dict: only the version to resume from
                        version = str(event["raw_object"]["metadata"]["resourceVersion"])
                        continue
                    version = str(item.metadata.resource_version)
                    if kind == "DELETED":
                        self.items.pop(item.metadata.name, None)
                    else:
                        self.items[item.metadata.name] = _mirror(item)
                    self.changed()
        except ApiException as exc:
            if exc.status == 410:
                return None
            raise
        except TimeoutError:
            log.info("ConfigMap watch silent for %.0f s: listing again", self.client_timeout)
            return None
        self.last_contact = time.monotonic()
        return version  # the server closed the watch on schedule: resume from where we were


def _mirror(item: Any) -> MirroredConfigMap:
    return MirroredConfigMap(
        str(item.metadata.name), dict(item.data or {}), dict(item.metadata.annotations or {})
    )


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"


class ClusterWatcher:
    """Keeps the runtime converged on the mirror (same interface as the directory watcher).

    :meth:`run` may be restarted (it re-applies what the mirror holds, and restarts the mirror
    if that died). Problems with the desired state are logged when they appear and when they go
    away, not on every change; :meth:`problems` lists them meanwhile.
    """

    def __init__(
        self,
        mirror_factory: Callable[[Callable[[], None]], ConfigMapMirror],
        service: str,
        apply: Callable[[list[DesiredPlugin], bool], Any],
        current: Callable[[str], PluginSource | None],
        *,
        debounce: float = 0.05,
        on_applied: Callable[[], None] | None = None,
        secrets: SecretSettingsDir | None = None,
        pod: str | None = None,
    ) -> None:
        self._changed = asyncio.Event()
        self.pod = pod
        """this sidecar's pod: a staged rollout's canary names the pods that run it"""
        self.secrets = secrets or SecretSettingsDir(None)
        self.mirror = mirror_factory(self._changed.set)
        self.service = service
        self._apply = apply
        self._current = current
        self.debounce = debounce
        self.on_applied = on_applied
        self.waiting: dict[str, str] = {}
        self.code_hashes: dict[str, str] | None = None
        """what the last usable active list names (module -> code hash); None before the first"""
        self.rollouts: frozenset[str] = frozenset()
        """modules the last usable active list has under a staged rollout"""
        self._problems: list[str] = []
        self._mirror_task: asyncio.Task[None] | None = None
        self._retry = False
        self._runs = 0

    def request_reload(self) -> None:
        """Re-apply and retry failed versions now (SIGHUP)."""
        self._retry = True
        self._changed.set()

    def problems(self) -> list[str]:
        """What is wrong with the desired state now (ignored until it is fixed)."""
        return list(self._problems)

    def _ensure_mirror(self) -> None:
        task = self._mirror_task
        if task is not None and not task.done():
            return
        if task is not None:
            reason = "cancelled" if task.cancelled() else repr(task.exception())
            log.error("the ConfigMap mirror stopped (%s); starting it again", reason)
        self._mirror_task = asyncio.create_task(self.mirror.run(), name="luna-configmap-mirror")

    async def sync(self, *, retry_failed: bool = False) -> bool:
        """Start mirroring if needed, wait for the first complete LIST, then apply it."""
        self._ensure_mirror()
        await self.mirror.synced.wait()
        await self._apply_once(retry_failed)
        return True

    async def _apply_once(self, retry_failed: bool) -> None:
        self._changed.clear()
        self.secrets.reading()  # a kubelet update after this point is noticed by the next check
        found = desired_plugins(self.service, self.mirror.items, self._current, self.secrets, self.pod)
        self._report(found)
        if found.plugins is None:
            return
        self.code_hashes = None if found.runs_canary else found.code_hashes
        self.rollouts = found.rollouts
        await self._apply(found.plugins, retry_failed)
        if self.on_applied is not None:
            self.on_applied()

    def _report(self, found: DesiredState) -> None:
        for problem in found.problems:
            if problem not in self._problems:
                log.error("desired state unusable: %s", problem)
        if self._problems and not found.problems:
            log.info("the active list is usable again")
        self._problems = list(found.problems)
        for module, why in found.waiting.items():
            if self.waiting.get(module) != why:
                log.warning("plugin %s: waiting (%s)", module, why)
        self.waiting = dict(found.waiting)

    async def run(self) -> None:
        """Follow the mirror forever (cancel to stop)."""
        if self._runs:
            self._changed.set()  # restarted: converge on what the mirror holds now
        self._runs += 1
        try:
            while True:
                self._ensure_mirror()
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                except TimeoutError:
                    # a moment to check that the mirror still runs, and the mounted secret settings
                    if not self.secrets.changed():
                        continue
                await asyncio.sleep(self.debounce)  # a burst of ConfigMap events is one apply
                retry, self._retry = self._retry, False
                await self._apply_once(retry)
        finally:
            if self._mirror_task is not None:
                self._mirror_task.cancel()
                self._mirror_task = None

"""Cluster mode's desired state: the service's active list and plugin ConfigMaps, from the API.

``ConfigMapMirror`` keeps a copy of the ConfigMaps labelled for the service: one LIST, then a
WATCH from its resourceVersion with paired timeouts (the server closes a quiet watch after
``server_timeout``; the client gives up after ``client_timeout``), a fresh LIST on 410 Gone and
on silence, and backoff on errors. ``desired_plugins`` turns the mirror into the runtime's
desired list, taking a module's code only when its ConfigMap holds exactly the hash the active
list names: a half-propagated update keeps the running version instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from luna_sidecar.sources import DesiredPlugin, PluginSource

log = logging.getLogger(__name__)

ANNOTATION_HASH = "luna.dev/code-hash"


@dataclass(frozen=True)
class MirroredConfigMap:
    name: str
    data: Mapping[str, str]
    annotations: Mapping[str, str]


def active_list_name(service: str) -> str:
    return f"luna-plugins-{service}"


def active_list_key(service: str) -> str:
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


def desired_plugins(
    service: str,
    config_maps: Mapping[str, MirroredConfigMap],
    current: Callable[[str], PluginSource | None],
) -> tuple[list[DesiredPlugin], list[str]] | None:
    """The desired plugins and the modules still waiting for their code; ``None`` while the
    service has no active list yet (nothing to converge on, so nothing is unloaded)."""
    active = config_maps.get(active_list_name(service))
    if active is None:
        return None
    try:
        modules = json.loads(active.data.get(active_list_key(service), "[]"))
        details = json.loads(active.data.get("plugins.json", "{}"))
    except ValueError as exc:
        log.error("active list %s is not valid JSON, keeping the current plugins: %s", active.name, exc)
        return None
    desired: list[DesiredPlugin] = []
    waiting: list[str] = []
    for module in modules:
        entry = details.get(module) or {}
        wanted = entry.get("codeHash")
        holder = config_maps.get(str(entry.get("configMap")))
        code = holder.data.get(f"{module}.py") if holder else None
        if code is not None and wanted and hashlib.sha256(code.encode()).hexdigest() == wanted:
            origin = f"configmap/{holder.name}/{module}.py"  # type: ignore[union-attr]
            source = PluginSource(module, code.encode(), origin, entry.get("settings") or {}, wanted)
            desired.append(DesiredPlugin(module, source))
            continue
        waiting.append(module)
        running = current(module)
        if running is not None:  # keep serving what runs until the named version arrives
            desired.append(DesiredPlugin(module, running))
    return desired, waiting


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
                    version = str(item.metadata.resource_version)
                    if kind == "BOOKMARK":
                        continue
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
    """Keeps the runtime converged on the mirror (same interface as the directory watcher)."""

    def __init__(
        self,
        mirror_factory: Callable[[Callable[[], None]], ConfigMapMirror],
        service: str,
        apply: Callable[[list[DesiredPlugin], bool], Any],
        current: Callable[[str], PluginSource | None],
        *,
        debounce: float = 0.05,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self._changed = asyncio.Event()
        self.mirror = mirror_factory(self._changed.set)
        self.service = service
        self._apply = apply
        self._current = current
        self.debounce = debounce
        self.on_applied = on_applied
        self.waiting: list[str] = []
        self._mirror_task: asyncio.Task[None] | None = None
        self._retry = False

    def request_reload(self) -> None:
        """Re-apply and retry failed versions now (SIGHUP)."""
        self._retry = True
        self._changed.set()

    async def sync(self, *, retry_failed: bool = False) -> bool:
        """Start mirroring if needed, wait for the first complete LIST, then apply it."""
        if self._mirror_task is None:
            self._mirror_task = asyncio.create_task(self.mirror.run(), name="luna-configmap-mirror")
        await self.mirror.synced.wait()
        await self._apply_once(retry_failed)
        return True

    async def _apply_once(self, retry_failed: bool) -> None:
        self._changed.clear()
        found = desired_plugins(self.service, self.mirror.items, self._current)
        if found is None:
            return
        desired, self.waiting = found
        if self.waiting:
            log.info("waiting for the code of %s to reach its ConfigMap", ", ".join(self.waiting))
        await self._apply(desired, retry_failed)
        if self.on_applied is not None:
            self.on_applied()

    async def run(self) -> None:
        try:
            while True:
                await self._changed.wait()
                await asyncio.sleep(self.debounce)  # a burst of ConfigMap events is one apply
                retry, self._retry = self._retry, False
                await self._apply_once(retry)
        finally:
            if self._mirror_task is not None:
                self._mirror_task.cancel()

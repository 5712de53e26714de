"""The sidecars' reports, followed with a LIST and a WATCH of ``LunaPluginRuntime`` objects.

Reports arrive every heartbeat of every sidecar (every 10 s per pod), so this stream grows with
pods, not with changes. It bypasses kopf on purpose: at 500 simulated sidecars kopf's per-event
machinery costs about three times what this loop does (see docs/performance.md, "The operator at
scale"). Everything else the operator watches goes through kopf.

The loop keeps the :class:`~luna_operator.reports.ReportBook` current and hands every
:class:`~luna_operator.reports.ReportChange` to ``on_change``: one LIST (reports missing from
it are dropped), then a WATCH from its resourceVersion with paired timeouts (the server ends a
quiet watch after ``server_timeout``, the client gives up ``client_timeout`` after the last
byte), a fresh LIST after 410 Gone or silence, and backoff while the API is away. Bodies are
decoded once, straight from the stream; an object larger than ``max_line_bytes`` (far above
what etcd accepts) ends the watch and is re-listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from luna_operator.metrics import OperatorMetrics
from luna_operator.reports import ReportBook, ReportChange

log = logging.getLogger("luna.operator")

GROUP, VERSION, PLURAL = "luna.dev", "v1alpha1", "lunapluginruntimes"
#: no watch event line may be longer (an object is at most ~1.5 MiB in etcd)
MAX_LINE_BYTES = 4 * 1024 * 1024
_EVENT_TYPES = {"ADDED": "added", "MODIFIED": "modified", "DELETED": "deleted"}


class ReportFeed:
    """Follows the reports of ``namespaces`` (empty: all namespaces) into ``book``."""

    def __init__(
        self,
        api: client.ApiClient,
        book: ReportBook,
        on_change: Callable[[ReportChange], None],
        *,
        namespaces: tuple[str, ...] = (),
        metrics: OperatorMetrics | None = None,
        server_timeout: int = 60,
        client_timeout: float = 66.0,
        max_line_bytes: int = MAX_LINE_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.book = book
        self.on_change = on_change
        self.namespaces = namespaces
        self.metrics = metrics
        self.server_timeout = server_timeout
        self.client_timeout = client_timeout
        self.max_line_bytes = max_line_bytes
        self.clock = clock
        self.synced = asyncio.Event()
        """set once every namespace has been listed"""
        self.last_contact = time.monotonic()
        self._listed: set[str | None] = set()

    async def run(self) -> None:
        """Follow every namespace until cancelled; never raises for API trouble."""
        scopes: tuple[str | None, ...] = self.namespaces or (None,)
        await asyncio.gather(*(self._follow(scope) for scope in scopes))

    async def _follow(self, namespace: str | None) -> None:
        backoff = 0.5
        while True:
            try:
                version: str | None = await self._list(namespace)
                backoff = 0.5
                while version is not None:  # None: 410 Gone or silence, so list again
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.metrics is not None:
                    self.metrics.report_watch_restarts.inc()
                log.warning("sidecar reports unavailable (%s); retrying in %.1f s", _short(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)

    def _request(self, namespace: str | None, **params: Any) -> Any:
        if namespace is None:
            return self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _preload_content=False, **params
            )
        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False, **params
        )

    async def _list(self, namespace: str | None) -> str:
        response = await self._request(namespace, _request_timeout=self.client_timeout)
        try:
            raw = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
        finally:
            response.release()
        body = json.loads(raw)
        items = [item for item in body.get("items") or [] if isinstance(item, dict)]
        self.last_contact = time.monotonic()
        self._emit(self.book.replace(namespace, items, now=self.clock()))
        if self.metrics is not None:
            self.metrics.report_events.labels("listed").inc(len(items))
        self._listed.add(namespace)
        if len(self._listed) == len(self.namespaces or (None,)):
            self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Follow changes from ``version``; returns the version to resume from, or None to re-list."""
        response = await self._request(
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.server_timeout,
            _request_timeout=aiohttp.ClientTimeout(
                connect=10, sock_connect=10, sock_read=self.client_timeout
            ),
        )
        try:
            if response.status == 410:
                return None
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
            async for line in self._lines(response):
                self.last_contact = time.monotonic()
                event = json.loads(line)
                kind, item = event.get("type"), event.get("object")
                if not isinstance(item, dict):
                    continue
                if kind == "ERROR":
                    if item.get("code") == 410:
                        return None
                    raise RuntimeError(f"watch error: {str(item)[:300]}")
                version = str((item.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                self._apply(kind, item)
        except TimeoutError:
            log.info("sidecar report watch silent for %.0f s: listing again", self.client_timeout)
            return None
        finally:
            response.release()
        self.last_contact = time.monotonic()
        return version  # the server closed the watch on schedule: resume from where we were

    async def _lines(self, response: Any) -> AsyncIterator[bytes]:
        """The stream's lines (a silence longer than ``client_timeout`` raises TimeoutError)."""
        buffer = b""
        while True:
            chunk = await response.content.readany()
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1 :]
                if line.strip():
                    yield line
            if len(buffer) > self.max_line_bytes:
                raise RuntimeError(f"a watch event longer than {self.max_line_bytes} bytes")

    def _apply(self, kind: object, item: dict[str, Any]) -> None:
        now = self.clock()
        if kind == "DELETED":
            changes = self.book.remove(item, now=now)
        else:
            changes = self.book.put(item, now=now)
            report = self.book.get(item)
            if self.metrics is not None and report is not None and report.heartbeat is not None:
                self.metrics.report_delay.observe(now - report.heartbeat)
        if self.metrics is not None:
            self.metrics.report_events.labels(_EVENT_TYPES.get(str(kind), "other")).inc()
        self._emit(changes)

    def _emit(self, changes: list[ReportChange]) -> None:
        for change in changes:
            self.on_change(change)

    def healthy(self, within: float) -> bool:
        """Whether the API answered in the last ``within`` seconds."""
        return time.monotonic() - self.last_contact <= within


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {str(exc)[:200]}"

"""The sidecars' reports, followed with a LIST and a WATCH of ``LunaPluginRuntime`` objects.

Reports arrive every heartbeat of every sidecar (every 10 s per pod), so this stream grows with
pods, not with changes. It bypasses kopf on purpose (:class:`~luna_operator.list_watch.ListWatch`):
at 500 simulated sidecars kopf's per-event machinery costs about three times what this loop
does (see docs/performance.md, "The operator at scale").

The feed keeps the :class:`~luna_operator.reports.ReportBook` current and hands every
:class:`~luna_operator.reports.ReportChange` to ``on_change``; a LIST drops the reports missing
from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from luna_contract.names import GROUP, VERSION
from luna_contract.names import PLURAL_RUNTIMES as PLURAL
from luna_operator.list_watch import MAX_LINE_BYTES, ListWatch
from luna_operator.metrics import OperatorMetrics
from luna_operator.reports import ReportBook, ReportChange

_EVENT_TYPES = {"ADDED": "added", "MODIFIED": "modified", "DELETED": "deleted"}


class ReportFeed(ListWatch):
    """Follows the reports of ``namespaces`` (empty: all namespaces) into ``book``."""

    what = "sidecar reports"

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
        super().__init__(
            namespaces=namespaces,
            server_timeout=server_timeout,
            client_timeout=client_timeout,
            max_line_bytes=max_line_bytes,
        )
        self.custom = client.CustomObjectsApi(api)
        self.book = book
        self.on_change = on_change
        self.metrics = metrics
        self.clock = clock

    def request(self, namespace: str | None, **params: Any) -> Any:
        if namespace is None:
            return self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _preload_content=False, **params
            )
        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False, **params
        )

    def restarted(self) -> None:
        if self.metrics is not None:
            self.metrics.report_watch_restarts.inc()

    def listed(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        self._emit(self.book.replace(namespace, items, now=self.clock()))
        if self.metrics is not None:
            self.metrics.report_events.labels("listed").inc(len(items))

    def changed(self, kind: str, item: dict[str, Any]) -> None:
        now = self.clock()
        if kind == "DELETED":
            changes = self.book.remove(item, now=now)
        else:
            changes = self.book.put(item, now=now)
            report = self.book.get(item)
            if self.metrics is not None and report is not None and report.heartbeat is not None:
                self.metrics.report_delay.observe(now - report.heartbeat)
        if self.metrics is not None:
            self.metrics.report_events.labels(_EVENT_TYPES.get(kind, "other")).inc()
        self._emit(changes)

    def _emit(self, changes: list[ReportChange]) -> None:
        for change in changes:
            self.on_change(change)

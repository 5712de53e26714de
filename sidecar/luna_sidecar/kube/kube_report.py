"""The per-pod report: a ``LunaPluginRuntime`` object saying which module and code hash this
sidecar runs, with what state or error. Written on every change and every heartbeat, owned by
the Pod (so Kubernetes deletes it with the Pod) and deleted on a clean shutdown. The operator
reads these to fill each LunaPlugin's ``status.loaded``.

Once the sidecar follows an active list, the report names that list's revision and lists only
the modules where the sidecar differs from it (see :mod:`luna_contract.reports`). When the API
server drops ``spec.revision`` (a CRD older than this sidecar), the sidecar says so once and
writes full reports from then on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from luna_contract.names import GROUP, VERSION, report_name
from luna_contract.names import PLURAL_RUNTIMES as PLURAL
from luna_contract.reports import (
    REVISION_FIELD,
    DeliveryReport,
    PluginReport,
    ProcessReport,
    RuntimeReportSpec,
    active_revision,
    differences,
    report_body,
)

log = logging.getLogger(__name__)


#: how soon a new failure of a plugin under a staged rollout is reported
FAILURE_REPORT_SECONDS = 1.0


class RuntimeReporter:
    """Upserts this sidecar's report; ``poke`` asks for an early refresh."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        service: str,
        pod: str,
        pod_uid: str | None,
        plugins: Callable[[], list[dict[str, Any]]],
        ready: Callable[[], bool],
        interval: float = 10.0,
        problems: Callable[[], list[str]] = list,
        code_hashes: Callable[[], Mapping[str, str] | None] = lambda: None,
        rollouts: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.service = service
        self.pod = pod
        self.pod_uid = pod_uid
        self.name = report_name(pod, service)
        self._plugins = plugins
        self._ready = ready
        self._problems = problems
        self._code_hashes = code_hashes
        self._rollouts = rollouts
        self.interval = interval
        self.compact = True
        """whether reports name the active list's revision and list only differences (False
        once the API server was seen dropping ``spec.revision``)"""
        self._poked = asyncio.Event()
        self.reports = 0

    def poke(self) -> None:
        self._poked.set()

    def body(self) -> dict[str, Any]:
        """The report as it is to be written now (see :mod:`luna_contract.reports`)."""
        rollouts = self._rollouts()
        plugins = [_plugin_report(plugin, plugin.get("name") in rollouts) for plugin in self._plugins()]
        code_hashes = self._code_hashes() if self.compact else None
        revision = None
        if code_hashes is not None:
            revision = active_revision(code_hashes)
            plugins = differences(plugins, code_hashes)
        spec = RuntimeReportSpec(
            service=self.service,
            pod=self.pod,
            ready=self._ready(),
            heartbeat_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            problems=self._problems(),
            revision=revision,
            plugins=plugins,
        )
        return report_body(spec, pod_uid=self.pod_uid)

    async def report(self) -> None:
        """Write the report now (create, or replace the spec)."""
        body = self.body()
        stored = await self._write(body)
        self.reports += 1
        revision = body["spec"][REVISION_FIELD]
        if revision is not None and _spec(stored).get(REVISION_FIELD) != revision:
            log.warning(
                "the API server dropped spec.%s from the runtime report %s: its LunaPluginRuntime "
                "CRD is older than this sidecar (apply the chart's crds/); writing full reports",
                REVISION_FIELD,
                self.name,
            )
            self.compact = False
            await self._write(self.body())
            self.reports += 1

    async def _write(self, body: dict[str, Any]) -> object:
        """Merge-patch the spec, or create the report when there is none; returns what is stored."""
        try:
            return await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                {"spec": body["spec"]},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        created = {**body, "spec": {k: v for k, v in body["spec"].items() if v is not None}}
        custom = self.custom
        return await custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, created)

    async def run(self) -> None:
        """Report on every poke and at most every ``interval`` seconds (80 to 100 % of it, drawn
        afresh each time: pods started by one rollout spread their heartbeats); API trouble is
        retried. While a plugin is under a staged rollout, a new failure of it (a failed callback,
        a 5xx answer, a drop, a dead letter) is reported within :data:`FAILURE_REPORT_SECONDS`, so a failing
        canary is judged without waiting for the heartbeat; a pod whose plugins do not fail writes
        no more than before."""
        while True:
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not write the runtime report %s: %s", self.name, exc)
            reported = self._failures()
            deadline = time.monotonic() + self.interval * random.uniform(0.8, 1.0)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(self._poked.wait(), timeout=min(left, FAILURE_REPORT_SECONDS))
                    break
                except TimeoutError:
                    if self._rollouts() and self._failures() > reported:
                        break
            self._poked.clear()

    def _failures(self) -> int:
        """Failures so far of the plugins under a staged rollout (0 when there are none)."""
        rollouts = self._rollouts()
        if not rollouts:
            return 0
        total = 0
        for plugin in self._plugins():
            if plugin.get("name") in rollouts:
                counted = _plugin_report(plugin, True)
                total += (
                    (counted.failed_callbacks or 0) + (counted.route_errors or 0) + (counted.dropped or 0)
                )
                total += 1 if counted.failed_code_hash else 0
                total += counted.delivery.dead_letters if counted.delivery is not None else 0
        return total

    async def withdraw(self) -> None:
        """Delete the report (clean shutdown): this pod stops counting at once."""
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete the runtime report %s: %s", self.name, exc.reason)
        except Exception as exc:
            log.warning("could not delete the runtime report %s: %s", self.name, exc)


def _plugin_report(plugin: Mapping[str, Any], figures: bool = False) -> PluginReport:
    """A plugin as the runtime describes it (``GET /plugins``) as its report entry; with
    ``figures`` (it is under a staged rollout) its callbacks, route answers and drops too."""
    counted: dict[str, int] = {}
    if figures:
        classes = plugin.get("classes") or []
        handled = sum(int(c.get("handled") or 0) for c in classes)
        failed = sum(int(c.get("failed") or 0) for c in classes)
        counted = {
            "callbacks": handled + failed,
            "failed_callbacks": failed,
            "route_answers": int(plugin.get("routeAnswers") or 0),
            "route_errors": int(plugin.get("routeErrors") or 0),
            "dropped": sum(int(c.get("dropped") or 0) for c in classes),
        }
    return PluginReport(
        module=plugin["name"],
        state=plugin["state"],
        code_hash=plugin.get("codeHash"),
        failed_code_hash=plugin.get("failedCodeHash"),
        error=plugin.get("error"),
        # which plugin blocks the event loop, for kubectl get lpr -o yaml
        loop_blocked_seconds=plugin.get("loopBlockedSeconds") or None,
        # its packages: installing, installed or failed (absent without requirements)
        requirements=(plugin.get("requirements") or {}).get("state"),
        **counted,
        # a backlog, dead letters or an open breaker of its at-least-once delivery
        delivery=_delivery_report(plugin.get("classes") or []),
        process=_process_report(plugin.get("process")),
    )


def _process_report(process: object) -> ProcessReport | None:
    """An isolated plugin's process (``GET /plugins``' ``process``), or None while it has
    nothing to say (running, never ended since the version started)."""
    if not isinstance(process, Mapping):
        return None
    state = str(process.get("state") or "running")
    restarts = int(process.get("restarts") or 0)
    last = process.get("lastExit")
    last_exit = str(last.get("reason")) if isinstance(last, Mapping) and last.get("reason") else None
    if state == "running" and restarts == 0 and last_exit is None:
        return None
    return ProcessReport(state=state, restarts=restarts, last_exit=last_exit)


#: breaker states, the worst last
_BREAKER_ORDER = ("closed", "half-open", "open")


def _delivery_report(classes: list[Mapping[str, Any]]) -> DeliveryReport | None:
    """The durable queues of a plugin's classes (``GET /plugins``' ``delivery`` objects) summed
    up, or None while they have nothing to say (no queue, or empty and healthy)."""
    queues = [
        c["delivery"] for c in classes if isinstance(c, Mapping) and isinstance(c.get("delivery"), Mapping)
    ]
    if not queues:
        return None
    breakers = [str(queue.get("breaker") or "closed") for queue in queues]
    report = DeliveryReport(
        pending=sum(int(queue.get("pending") or 0) for queue in queues),
        oldest_batch_age_seconds=int(max(float(queue.get("oldestBatchAgeSeconds") or 0) for queue in queues)),
        dead_letters=sum(int(queue.get("deadLetters") or 0) for queue in queues),
        breaker=max(
            breakers, key=lambda state: _BREAKER_ORDER.index(state) if state in _BREAKER_ORDER else 0
        ),
    )
    return None if report == DeliveryReport() else report


def _spec(stored: object) -> dict[str, Any]:
    spec = stored.get("spec") if isinstance(stored, dict) else None
    return spec if isinstance(spec, dict) else {}

"""Kubernetes Events on LunaPlugins for what a user must know, one per change, not per pass.

- the phase a plugin enters (``Ready``, ``Disabled``; ``Invalid`` and ``Pending`` as Warnings,
  their message saying which version keeps serving, if any);
- ``LoadFailed`` (Warning): pods report the version in service as failed and run nothing of it;
- ``RolledBack`` (Warning): pods could not load the version in service and keep serving the last
  good one.

What was announced is remembered per plugin and seeded from the status the plugin shows when it
is first seen, so an operator restart does not announce it again. Posting is best effort: an
Event that cannot be written never fails a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from luna_contract.names import API_VERSION
from luna_operator.cluster_api import ClusterApi
from luna_operator.desired import PluginOutcome
from luna_operator.metrics import OperatorMetrics
from luna_operator.records import PluginRecord
from luna_operator.status import PodsOfPlugin

log = logging.getLogger("luna.operator")

GROUP_VERSION = API_VERSION
#: the longest Event message (the API server allows 1 KiB)
MAX_EVENT_MESSAGE = 1024


class EventRecorder:
    """Posts the Events of the module docstring through ``api``."""

    def __init__(
        self,
        api: ClusterApi,
        metrics: OperatorMetrics | None = None,
        *,
        reporter: str = "luna-plugins-operator",
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.reporter = reporter
        self._phase: dict[str, str | None] = {}
        self._failures: dict[str, set[tuple[str, str]]] = {}
        self.posted = 0

    def _seed(self, plugin: PluginRecord) -> None:
        if plugin.uid in self._phase:
            return
        status = plugin.status or {}
        self._phase[plugin.uid] = status.get("phase") if isinstance(status.get("phase"), str) else None
        seen: set[tuple[str, str]] = set()
        for pod in status.get("pods") or []:
            if isinstance(pod, dict) and pod.get("failedCodeHash"):
                kind = "RolledBack" if pod.get("state") == "running" else "LoadFailed"
                seen.add((str(pod["failedCodeHash"]), kind))
            elif isinstance(pod, dict) and pod.get("state") == "failed" and pod.get("codeHash"):
                seen.add((str(pod["codeHash"]), "LoadFailed"))
        self._failures[plugin.uid] = seen

    async def phase(self, outcome: PluginOutcome) -> None:
        """Announce the phase the plugin enters, if it changed."""
        plugin = outcome.plugin
        self._seed(plugin)
        if self._phase.get(plugin.uid) == outcome.phase:
            return
        self._phase[plugin.uid] = outcome.phase
        kind = "Warning" if outcome.phase in ("Invalid", "Pending") else "Normal"
        await self.post(
            plugin, kind, outcome.phase, outcome.message or f"module {outcome.serving_module} is active"
        )

    async def pods(self, outcome: PluginOutcome, pods: PodsOfPlugin) -> None:
        """Announce pods that failed to load the version in service, once per version."""
        failed = pods.failed
        if failed is None:
            return
        plugin = outcome.plugin
        self._seed(plugin)
        reason = "RolledBack" if failed.kept else "LoadFailed"
        seen = self._failures.setdefault(plugin.uid, set())
        if (failed.code_hash, reason) in seen:
            return
        seen.add((failed.code_hash, reason))
        what = f"version {failed.code_hash[:12]} failed to load on {failed.pods} of {pods.total} pod(s)"
        where = f"{failed.example_pod}: {failed.error}" if failed.error else failed.example_pod
        then = (
            f"they keep serving the last good version {failed.kept[:12]}"
            if failed.kept
            else "the plugin does not run there"
        )
        await self.post(plugin, "Warning", reason, f"{what} ({where}); {then}")

    def forget(self, uid: str) -> None:
        """Drop what was remembered of a deleted plugin."""
        self._phase.pop(uid, None)
        self._failures.pop(uid, None)

    async def post(self, plugin: PluginRecord, kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the LunaPlugin, for `kubectl describe` (best effort)."""
        involved = {
            "apiVersion": GROUP_VERSION,
            "kind": "LunaPlugin",
            "name": plugin.name,
            "namespace": plugin.namespace,
            "uid": plugin.uid,
        }
        await self.post_on(involved, kind, reason, message)

    async def post_on(self, involved: Mapping[str, str], kind: str, reason: str, message: str) -> bool:
        """A Kubernetes Event of type ``kind`` on the object ``involved`` (its apiVersion, kind,
        name, namespace and uid), the message cut to what the API server takes. Best effort:
        False when it could not be written (logged at debug level, never raised)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = involved["namespace"]
        body: dict[str, Any] = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "type": kind,
            "reason": reason,
            "message": message[:MAX_EVENT_MESSAGE],
            "source": {"component": self.reporter},
            "reportingComponent": self.reporter,
            "reportingInstance": self.reporter,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.create_event(namespace, body)
        except Exception as exc:  # events inform; they never fail a pass
            log.debug("could not post an event for %s/%s: %s", namespace, involved["name"], exc)
            return False
        self.posted += 1
        if self.metrics is not None:
            self.metrics.kubernetes_events.labels(reason).inc()
        return True

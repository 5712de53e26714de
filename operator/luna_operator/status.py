"""Reporting a pass's outcome on each LunaPlugin: its status, and an Event when its phase changes.

``StatusWriter.write`` patches one plugin's status only when it differs from what the plugin
shows (or what was written last, which the watch may not have delivered yet); it never raises
for the API's answers, so one plugin's status never keeps another's from being written.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from luna_operator.desired import PluginOutcome, bounded
from luna_operator.render import plugin_configmap_name
from luna_operator.store import PluginRecord

log = logging.getLogger("luna.operator")

GROUP, VERSION, PLURAL = "luna.dev", "v1alpha1", "lunaplugins"
#: at most this many pods are listed in ``status.pods``
MAX_PODS = 50
#: the longest error of one pod quoted in ``status.pods``
MAX_POD_ERROR_CHARS = 500


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    """Writes ``status`` and posts Events for the LunaPlugins of every pass."""

    def __init__(self, api: client.ApiClient, *, reporter: str = "luna-plugins-operator") -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.reporter = reporter
        # the last status written per plugin uid: the watch may not have shown it to the store yet
        self._written: dict[str, dict[str, Any]] = {}

    async def write(self, outcome: PluginOutcome, reports: list[dict[str, Any]] | None) -> Exception | None:
        """Bring the plugin's status in line with ``outcome``; ``reports`` (the service's fresh
        sidecar reports) set ``loaded`` and ``pods``, or leave them as they are when None (the
        reports could not be read). Returns the error when the status could not be written."""
        try:
            await self._write(outcome, reports)
        except ApiException as exc:
            if exc.status == 404:
                return None  # deleted meanwhile: nothing to report on
            log.warning(
                "status of %s/%s not written: HTTP %s %s",
                outcome.plugin.namespace,
                outcome.plugin.name,
                exc.status,
                exc.reason,
            )
            return exc
        except Exception as exc:  # the API unreachable: the pass is retried
            return exc
        return None

    async def _write(self, outcome: PluginOutcome, reports: list[dict[str, Any]] | None) -> None:
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
        loaded = loaded_status(outcome, reports) if reports is not None else {}
        message = outcome.message
        failing = [pod for pod in loaded.get("pods", []) if pod.get("error")]
        if failing and outcome.phase == "Ready":
            first = failing[0]
            message = bounded(f"{len(failing)} pod(s) report an error: {first['pod']}: {first['error']}")
        desired = {
            "phase": outcome.phase,
            "message": message,
            "module": outcome.serving_module,
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
        await self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            plugin.namespace,
            PLURAL,
            plugin.name,
            {"status": desired},
            _content_type="application/merge-patch+json",
        )
        previous_phase = (self._written.get(plugin.uid) or current).get("phase")
        self._written[plugin.uid] = comparable
        if previous_phase != outcome.phase:
            kind = "Warning" if outcome.phase in ("Invalid", "Pending") else "Normal"
            await self.post_event(
                plugin, kind, outcome.phase, outcome.message or f"module {outcome.serving_module} is active"
            )

    def forget(self, uid: str) -> None:
        """Drop what was remembered of a deleted plugin."""
        self._written.pop(uid, None)

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
        except Exception as exc:  # events inform; they never fail a pass
            log.debug("could not post an event for %s/%s: %s", plugin.namespace, plugin.name, exc)


def loaded_status(outcome: PluginOutcome, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """``loaded`` ("pods running the version in service / pods of the service") and ``pods``
    (each pod's hash, state and error for the module the plugin is served as), from fresh
    sidecar reports."""
    module = outcome.serving_module
    pods = []
    running = 0
    for report in reports:
        listed = report.get("plugins")
        mine = (
            next(
                (p for p in listed if isinstance(p, dict) and p.get("module") == module),
                None,
            )
            if isinstance(listed, list)
            else None
        )
        entry: dict[str, Any] = {
            "pod": str(report.get("pod")),
            "state": str(mine.get("state")) if mine else "absent",
        }
        if mine:
            entry["codeHash"] = mine.get("codeHash")
            if mine.get("error"):
                entry["error"] = bounded(str(mine["error"]), MAX_POD_ERROR_CHARS)
        if mine and mine.get("state") == "running" and mine.get("codeHash") == outcome.code_hash:
            running += 1
        pods.append(entry)
    return {"loaded": f"{running}/{len(reports)}", "pods": pods[:MAX_PODS]}

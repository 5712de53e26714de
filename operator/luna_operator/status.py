"""Each LunaPlugin's status: what the last full pass decided, and which pods run which version.

- :func:`pods_of_plugin` (pure): ``loaded``, ``pods`` and the counts behind them (also written as
  the integers ``podsReady``, ``podsTotal`` and ``podsFailing``, for tools such as Argo CD), from a
  :class:`~luna_operator.reports.ReportSnapshot`; it looks at each distinct report content once,
  so its cost grows with the number of distinct contents, not of pods;
- :func:`desired_status` (pure): the whole ``status`` object for a plugin;
- :class:`StatusWriter`: patches a plugin's status only when it differs from what the plugin
  shows (or what this process wrote last, which the watch may not have delivered yet). It never
  raises for the API's answers, so one plugin's status never keeps another's from being written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from luna_contract.names import plugin_configmap_name
from luna_operator.cluster_api import ClusterApi
from luna_operator.desired import PluginOutcome, bounded
from luna_operator.errors import ApiError
from luna_operator.reports import PodPlugin, ReportSnapshot

log = logging.getLogger("luna.operator")

#: at most this many pods are listed in ``status.pods`` (those with a problem first)
MAX_PODS = 50


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FailedVersion:
    """Pods that report the version in service as failed to load."""

    code_hash: str
    pods: int
    example_pod: str
    error: str
    kept: str | None
    """the version those pods keep serving instead (the last good one), None: none"""


@dataclass(frozen=True)
class PodsOfPlugin:
    """Where a plugin's version in service runs, from the service's fresh reports."""

    running: int
    total: int
    pods: list[dict[str, Any]] = field(default_factory=list)
    """at most :data:`MAX_PODS` entries, pods with a problem first, sorted by pod name"""
    outdated: int = 0
    """pods that do not run the version in service"""
    failing: int = 0
    """pods that report an error for the plugin"""
    failed: FailedVersion | None = None

    @property
    def loaded(self) -> str:
        return f"{self.running}/{self.total}"


def _pod_entry(pod: str, entry: PodPlugin | None) -> dict[str, Any]:
    if entry is None:
        return {"pod": pod, "state": "absent"}
    found: dict[str, Any] = {"pod": pod, "state": entry.state}
    if entry.code_hash:
        found["codeHash"] = entry.code_hash
    if entry.failed_code_hash:
        found["failedCodeHash"] = entry.failed_code_hash
    if entry.error:
        found["error"] = entry.error
    return found


def pods_of_plugin(outcome: PluginOutcome, snapshot: ReportSnapshot) -> PodsOfPlugin:
    """Count and list the pods of ``snapshot`` for the module ``outcome`` serves."""
    module, current = outcome.serving_module, outcome.code_hash
    canary = outcome.active.canary if outcome.active is not None else None
    # under a staged rollout a pod serves the plugin on either version
    versions = {current} | ({canary.code_hash} if canary is not None else set())
    running = outdated = failing = 0
    problems: list[tuple[str, PodPlugin | None]] = []
    fine: list[tuple[str, PodPlugin | None]] = []
    failed_pods = 0
    failed_example: tuple[str, PodPlugin] | None = None
    for group in snapshot:
        entry = group.plugins.get(module)
        count = len(group.pods)
        serving = entry is not None and entry.state == "running" and entry.code_hash in versions
        if serving:
            running += count
        else:
            outdated += count
        if entry is not None and entry.error:
            failing += count
        if entry is not None and current and _failed_version(entry) == current:
            failed_pods += count
            if failed_example is None or group.pods[0] < failed_example[0]:
                failed_example = (group.pods[0], entry)
        target = problems if not serving or (entry is not None and entry.error) else fine
        if len(target) < MAX_PODS:
            target.extend((pod, entry) for pod in group.pods[: MAX_PODS - len(target)])
    listed = sorted((problems + fine)[:MAX_PODS], key=lambda pair: pair[0])
    failed = None
    if failed_example is not None and current:
        pod, entry = failed_example
        failed = FailedVersion(
            current,
            failed_pods,
            pod,
            entry.error or "",
            entry.code_hash if entry.state == "running" else None,
        )
    return PodsOfPlugin(
        running,
        snapshot.pods,
        [_pod_entry(pod, entry) for pod, entry in listed],
        outdated,
        failing,
        failed,
    )


def _failed_version(entry: PodPlugin) -> str | None:
    """The version a pod reports as failed: the newer one it could not load, or the one that failed."""
    if entry.failed_code_hash:
        return entry.failed_code_hash
    return entry.code_hash if entry.state == "failed" else None


def desired_status(
    outcome: PluginOutcome, pods: PodsOfPlugin | None, current: dict[str, Any]
) -> dict[str, Any]:
    """The plugin's whole status; ``pods`` None keeps ``loaded``, the ``pods*`` counts and ``pods``
    as ``current`` has them (the reports are not known yet). ``current`` is the status the plugin
    shows now. ``podsReady``/``podsTotal`` are the two numbers of ``loaded``; ``podsFailing`` counts
    the pods that report an error for the plugin (any version)."""
    plugin = outcome.plugin
    ready = outcome.phase == "Ready"
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": outcome.phase,
        "message": outcome.message or "the code is valid and in the service's active list",
        "observedGeneration": plugin.generation,
    }
    previous: dict[str, Any] = next(
        (c for c in current.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), {}
    )
    # the transition time moves only when the condition's status flips
    flipped = previous.get("status") != condition["status"] or not previous.get("lastTransitionTime")
    condition["lastTransitionTime"] = _now() if flipped else previous["lastTransitionTime"]
    message = outcome.message
    if pods is not None and pods.failing and ready:
        first = next((p for p in pods.pods if p.get("error")), None)
        if first is not None:
            message = bounded(f"{pods.failing} pod(s) report an error: {first['pod']}: {first['error']}")
    conditions = [condition]
    status: dict[str, Any] = {
        "phase": outcome.phase,
        "message": message,
        "module": outcome.serving_module,
        "codeHash": outcome.code_hash,
        "configMap": plugin_configmap_name(plugin.name) if outcome.code_hash else None,
        "observedGeneration": plugin.generation,
        "conditions": conditions,
    }
    if outcome.rollout is not None:
        status["rollout"] = dict(outcome.rollout)
        conditions.append(_rolled_out(outcome.rollout, current, plugin.generation))
    elif current.get("rollout") is not None:
        status["rollout"] = None  # spec.rollout was removed: the merge patch deletes it
    if pods is not None:
        status |= {
            "loaded": pods.loaded,
            "podsReady": pods.running,
            "podsTotal": pods.total,
            "podsFailing": pods.failing,
            "pods": pods.pods,
        }
    return status


def _rolled_out(rollout: Mapping[str, Any], current: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """The ``RolledOut`` condition (``kubectl wait --for=condition=RolledOut``): True once the
    version of the spec is promoted, False while it rolls out or after it was rolled back."""
    phase = str(rollout.get("phase"))
    condition: dict[str, Any] = {
        "type": "RolledOut",
        "status": "True" if phase == "Promoted" else "False",
        "reason": phase,
        "message": str(rollout.get("reason") or phase),
        "observedGeneration": generation,
    }
    previous: Mapping[str, Any] = next(
        (
            c
            for c in current.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == "RolledOut"
        ),
        {},
    )
    flipped = previous.get("status") != condition["status"] or not previous.get("lastTransitionTime")
    condition["lastTransitionTime"] = _now() if flipped else previous["lastTransitionTime"]
    return condition


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` without the condition's transition time (which only moves on a flip)."""
    conditions = [{**c, "lastTransitionTime": None} for c in status.get("conditions") or []]
    return {**status, "conditions": conditions}


class StatusWriter:
    """Writes the status of LunaPlugins through ``api``."""

    def __init__(self, api: ClusterApi) -> None:
        self.api = api
        # the last status written per plugin uid: the watch may not have shown it to the view yet
        self._written: dict[str, dict[str, Any]] = {}
        self.patches = 0
        self.gone: set[str] = set()
        """uids of plugins whose status patch met 404: deleted, whatever the view still shows"""

    def shown(self, outcome: PluginOutcome) -> dict[str, Any]:
        """The status the plugin has: what this process wrote last, else what the view shows."""
        return self._written.get(outcome.plugin.uid) or dict(outcome.plugin.status)

    async def write(self, outcome: PluginOutcome, pods: PodsOfPlugin | None) -> ApiError | None:
        """Bring the plugin's status in line; returns the error when it could not be written (a
        404 is no error: the plugin was deleted meanwhile, see :attr:`gone`)."""
        plugin = outcome.plugin
        shown = self.shown(outcome)
        desired = desired_status(outcome, pods, shown)
        if _comparable(desired) == _comparable({k: shown.get(k) for k in desired}):
            return None
        try:
            await self.api.patch_plugin_status(plugin.namespace, plugin.name, desired)
        except ApiError as exc:
            if exc.status == 404:
                self.gone.add(plugin.uid)
                return None
            log.warning(
                "status of %s/%s not written: %s",
                plugin.namespace,
                plugin.name,
                exc,
                extra={"plugin": plugin.name},
            )
            return exc
        self.patches += 1
        self._written[plugin.uid] = {**shown, **desired}
        return None

    def forget(self, uid: str) -> None:
        """Drop what was remembered of a deleted plugin."""
        self._written.pop(uid, None)
        self.gone.discard(uid)

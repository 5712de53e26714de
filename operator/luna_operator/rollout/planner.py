"""A pass's part in staged rollouts: turn each plugin's outcome into what its rollout allows.

For a plugin with ``spec.rollout`` whose checked version differs from the one in service (what
its ConfigMap holds), :class:`RolloutPlanner` keeps the version in service in the plugin's
ConfigMap and active-list entry, puts the new version in the canary ConfigMap
(``lunacanary-<name>``) and names the pods that run it in the entry's ``canary``; judges the
canary from the pods' reports when a judgement is due, and by its PromQL queries
(:mod:`.queries`, asked through the :class:`~luna_operator.rollout.queries.QuerySource` it is
given); and moves the rollout on
(:mod:`.decision`). Promoted, the new version is the plugin's version in service as without a
rollout; rolled back, the version in service stays and the canary goes.

The rollout's state is ``status.rollout`` (:func:`to_status`, :func:`from_status`), so a restarted
operator resumes it; the last window's report snapshot is kept in memory only (after a restart the
first judgement counts from each canary's start).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast, get_args

from luna_contract.active_list import Canary
from luna_contract.names import canary_configmap_name
from luna_contract.rollout import AnalysisQuery, RolloutError, RolloutSpec
from luna_operator.desired import PluginOutcome, bounded
from luna_operator.records import PluginRecord
from luna_operator.render import ExistingConfigMap, StoredVersion
from luna_operator.reports import ReportSnapshot
from luna_operator.rollout.analysis import Judgement, PodSample, QueryFigure, judge
from luna_operator.rollout.canary_pods import choose_canary_pods
from luna_operator.rollout.decision import (
    Analysis,
    Command,
    Phase,
    RolloutState,
    advance,
    awaiting_canary,
    begin,
    judgement_due,
)
from luna_operator.rollout.queries import (
    QueryContext,
    QueryError,
    QuerySource,
    combine,
    fill,
    inconclusive,
    judge_values,
)

#: the soonest a rollout asks for its next pass
MIN_WAIT = 0.5


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def to_status(state: RolloutState, spec: RolloutSpec) -> dict[str, Any]:
    """``status.rollout`` for ``state``."""
    step = spec.steps[min(state.step, len(spec.steps) - 1)]
    return {
        "phase": state.phase,
        "step": state.step,
        "percent": step.percent if state.active else (100 if state.phase == "Promoted" else 0),
        "canaryHash": state.canary_hash,
        "stableHash": state.stable_hash,
        "canaryPods": list(state.pods),
        "canaryPodCount": len(state.pods),
        "stepStartedAt": _iso(state.step_started),
        "lastJudgedAt": _iso(state.last_judged),
        "failures": state.failures,
        "passesInStep": state.passes_in_step,
        "heldByFailures": state.held_by_failures,
        "reason": bounded(state.reason, 500),
        "handledCommand": state.handled_command,
        "analyses": [_analysis_status(a) for a in state.analyses],
    }


def _analysis_status(analysis: Analysis) -> dict[str, Any]:
    found: dict[str, Any] = {
        "at": _iso(analysis.at),
        "step": analysis.step,
        "verdict": analysis.verdict,
        "message": bounded(analysis.message, 300),
    }
    if analysis.queries:
        found["queries"] = [
            {"name": q.name, "verdict": q.verdict}
            | ({"value": f"{q.value:.6g}"} if q.value is not None else {})
            for q in analysis.queries
        ]
    return found


def _figures_of(found: object) -> tuple[QueryFigure, ...]:
    """The query figures of a stored judgement (the message of each is not kept: empty)."""
    if not isinstance(found, list):
        return ()
    figures = []
    for item in found:
        if not isinstance(item, Mapping):
            continue
        verdict = item.get("verdict")
        try:
            value: float | None = float(item["value"]) if isinstance(item.get("value"), str) else None
        except ValueError:
            value = None
        figures.append(
            QueryFigure(
                str(item.get("name")),
                verdict if verdict in ("Successful", "Failed", "Inconclusive") else "Inconclusive",
                value,
                "",
            )
        )
    return tuple(figures)


def from_status(found: object) -> RolloutState | None:
    """The state a ``status.rollout`` holds; None when there is none or it cannot be read."""
    if not isinstance(found, Mapping):
        return None
    phase, canary = found.get("phase"), found.get("canaryHash")
    if phase not in get_args(Phase) or not isinstance(canary, str):
        return None
    known = cast(Phase, phase)
    stable = found.get("stableHash")
    analyses = tuple(
        Analysis(
            _epoch(a.get("at")) or 0.0,
            int(a.get("step") or 0),
            str(a.get("verdict")),
            str(a.get("message")),
            _figures_of(a.get("queries")),
        )
        for a in found.get("analyses") or []
        if isinstance(a, Mapping)
    )
    pods = found.get("canaryPods")
    command = found.get("handledCommand")
    return RolloutState(
        phase=known,
        canary_hash=canary,
        stable_hash=stable if isinstance(stable, str) else None,
        step=int(found.get("step") or 0),
        step_started=_epoch(found.get("stepStartedAt")) or 0.0,
        failures=int(found.get("failures") or 0),
        passes_in_step=int(found.get("passesInStep") or 0),
        last_judged=_epoch(found.get("lastJudgedAt")),
        held_by_failures=bool(found.get("heldByFailures")),
        reason=str(found.get("reason") or ""),
        analyses=analyses,
        pods=tuple(str(p) for p in pods) if isinstance(pods, list) else (),
        handled_command=command if isinstance(command, str) else None,
    )


def read_command(value: str | None, handled: str | None) -> tuple[Command | None, str | None]:
    """The command of the annotation ``luna.dev/rollout-command`` (its ``value``) when it was not
    acted on yet, and the value to remember as handled."""
    if not value or value == handled:
        return None, handled
    word = value.split("/", 1)[0].strip().lower()
    command: Command | None = word if word in ("promote", "abort", "retry") else None  # type: ignore[assignment]
    return command, value


def samples(snapshot: ReportSnapshot, module: str, canary_hash: str) -> dict[str, PodSample]:
    """Each reporting pod's figures for ``module`` (pods that report none are left out)."""
    found: dict[str, PodSample] = {}
    for group in snapshot:
        entry = group.plugins.get(module)
        if entry is None:
            continue
        failed = entry.failed_code_hash == canary_hash or (
            entry.state == "failed" and entry.code_hash == canary_hash
        )
        running = entry.code_hash or ""
        if failed and entry.code_hash != canary_hash:
            running = canary_hash  # the canary failed to load there: judged as the canary's pod
        figures = entry.figures
        if figures is None and not failed:
            continue
        for pod in group.pods:
            if figures is None:
                found[pod] = PodSample(pod, running, load_failed=True)
                continue
            found[pod] = PodSample(
                pod,
                running,
                callbacks=figures.callbacks,
                failed_callbacks=figures.failed_callbacks,
                route_answers=figures.route_answers,
                route_errors=figures.route_errors,
                dropped=figures.dropped,
                loop_blocked_seconds=figures.loop_blocked_seconds,
                load_failed=failed,
                dead_letters=entry.dead_letters,
            )
    return found


def window_start(snapshot: ReportSnapshot, module: str, canary_hash: str) -> dict[str, PodSample]:
    """What a judgement window starts from: :func:`samples`, and for each other pod reporting
    ``module`` (no figures yet: it does not follow the rollout's list yet) the dead letters it holds,
    the baseline its new dead letters are counted from."""
    found = {
        pod: PodSample(pod, entry.code_hash or "", dead_letters=entry.dead_letters)
        for group in snapshot
        if (entry := group.plugins.get(module)) is not None
        for pod in group.pods
    }
    found.update(samples(snapshot, module, canary_hash))
    return found


@dataclass(frozen=True)
class RolloutPlan:
    """What one plugin's rollout makes of its outcome."""

    outcome: PluginOutcome
    canary: StoredVersion | None = None
    """what the canary ConfigMap must hold (None: it must not exist)"""
    next_in: float | None = None
    """seconds until this rollout needs another pass (None: it needs none)"""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) of the Events to post on the plugin"""
    rolled_back: bool = False


class RolloutPlanner:
    """Plans every rollout of the operator's passes (module docstring); keeps each rollout's
    state and last report snapshot between passes."""

    def __init__(self, prometheus: QuerySource | None = None) -> None:
        self.prometheus = prometheus
        """where ``spec.rollout.analysis.queries`` are asked (None: no Prometheus is configured)"""
        self._states: dict[str, RolloutState] = {}
        self._windows: dict[str, tuple[float, dict[str, PodSample]]] = {}

    def forget(self, uid: str) -> None:
        """Drop what is kept of a deleted plugin."""
        self._states.pop(uid, None)
        self._windows.pop(uid, None)

    def phases(self) -> dict[str, int]:
        """Plugins by rollout phase, for the metrics."""
        counts: dict[str, int] = {}
        for state in self._states.values():
            counts[state.phase] = counts.get(state.phase, 0) + 1
        return counts

    async def plan(
        self,
        outcome: PluginOutcome,
        existing: ExistingConfigMap | None,
        snapshot: ReportSnapshot,
        now: float,
    ) -> RolloutPlan:
        """The plan for one plugin's ``outcome`` (as :func:`~luna_operator.desired.decide` made
        it), given its ConfigMap as found and the service's fresh reports."""
        plugin = outcome.plugin
        spec = plugin.fields.rollout
        stored, active = outcome.stored, outcome.active
        if spec is None or active is None or stored is None or outcome.phase != "Ready":
            self.forget(plugin.uid)
            return RolloutPlan(outcome)
        previous = existing.version if existing is not None and existing.managed else None
        state = self._states.get(plugin.uid) or from_status(plugin.status.get("rollout"))
        before = state
        state = begin(stored.code_hash, state, now, previous.code_hash if previous is not None else None)
        if state is not before:  # a new rollout: its first window starts now
            self._windows[plugin.uid] = (now, window_start(snapshot, active.module, state.canary_hash))
        command, handled = read_command(plugin.rollout_command, state.handled_command)
        state = replace(state, handled_command=handled)
        judgement: Judgement | None = None
        if command is None and judgement_due(spec, state, now):
            judgement = await self._judge(plugin, state, spec, snapshot, now, active.module)
        state = advance(spec, state, now, judgement, command)
        stable_ok = (
            previous is not None
            and previous.code_hash == state.stable_hash
            and previous.module == stored.module
        )
        if state.active and not stable_ok:
            # the version in service is not in the plugin's ConfigMap any more (or the module
            # changed): nothing to fall back to, so the new version goes everywhere
            state = replace(
                state, phase="Promoted", reason="the version in service is not available to compare with"
            )
        if state.active:
            state = replace(
                state,
                pods=tuple(
                    choose_canary_pods(
                        f"{plugin.uid}/{state.canary_hash}",
                        snapshot_pods(snapshot),
                        spec.steps[min(state.step, len(spec.steps) - 1)].percent,
                        state.pods,
                    )
                ),
            )
        else:
            state = replace(state, pods=())
        self._states[plugin.uid] = state
        events = _events(before, state, spec)
        status = to_status(state, spec)
        if state.phase == "Promoted":
            return RolloutPlan(replace(outcome, rollout=status), events=events)
        assert previous is not None  # stable_ok
        kept = replace(previous, service=plugin.service)
        stable_entry = replace(active, code_hash=previous.code_hash, module=previous.module, canary=None)
        if state.phase == "RolledBack":
            message = bounded(
                f"version {state.canary_hash[:12]} was rolled back ({state.reason}); version "
                f"{previous.code_hash[:12]} keeps serving; change the code or run "
                f"`luna-plugins rollout retry {plugin.name}`"
            )
            return RolloutPlan(
                replace(outcome, stored=kept, active=stable_entry, message=message, rollout=status),
                events=events,
                rolled_back=before is not None and before.phase != "RolledBack",
            )
        canary = Canary(state.canary_hash, canary_configmap_name(plugin.name), state.pods)
        percent = spec.steps[min(state.step, len(spec.steps) - 1)].percent
        message = bounded(
            f"version {state.canary_hash[:12]} rolling out: {state.phase}, step {state.step + 1} of "
            f"{len(spec.steps)} ({percent}%), on {len(state.pods)} pod(s); version "
            f"{previous.code_hash[:12]} serves the others"
        )
        return RolloutPlan(
            replace(
                outcome,
                stored=kept,
                active=replace(stable_entry, canary=canary),
                message=message,
                rollout=status,
            ),
            canary=stored,
            next_in=_next_in(spec, state, now),
            events=events,
        )

    async def _judge(
        self,
        plugin: PluginRecord,
        state: RolloutState,
        spec: RolloutSpec,
        snapshot: ReportSnapshot,
        now: float,
        module: str,
    ) -> Judgement | None:
        """The judgement of the window since the last one; None when it is put off because no
        pod reports running the canary yet (:func:`awaiting_canary`)."""
        found = samples(snapshot, module, state.canary_hash)
        reported = any(sample.code_hash == state.canary_hash for sample in found.values())
        if awaiting_canary(spec, state, now, reported):
            return None
        since, before = self._windows.get(plugin.uid, (state.step_started, {}))
        self._windows[plugin.uid] = (now, window_start(snapshot, module, state.canary_hash))
        window = max(now - since, spec.interval_seconds)
        built_in = judge(
            before,
            found,
            state.canary_hash,
            max_failure_ratio=spec.analysis.max_failure_ratio,
            window_seconds=window,
        )
        if not spec.analysis.queries:
            return built_in
        context = QueryContext(
            namespace=plugin.namespace,
            service=plugin.service,
            plugin=plugin.name,
            module=module,
            canary_pods=state.pods,
            stable_pods=[pod for pod in snapshot_pods(snapshot) if pod not in state.pods],
            canary_hash=state.canary_hash,
            stable_hash=state.stable_hash or "",
            window_seconds=window,
        )
        figures = await asyncio.gather(*(self._ask(query, context) for query in spec.analysis.queries))
        return combine(built_in, figures)

    async def _ask(self, query: AnalysisQuery, context: QueryContext) -> QueryFigure:
        """One query's figure; whatever keeps it from a number makes it inconclusive."""
        if self.prometheus is None:
            return inconclusive(query, "the operator has no --prometheus-url")
        if not context.canary_pods:
            return inconclusive(query, "no pod runs the canary")
        try:
            expression = fill(query.query, context)
            values = await self.prometheus.query(expression)
        except (QueryError, RolloutError) as exc:
            return inconclusive(query, str(exc))
        return judge_values(query, values)


def snapshot_pods(snapshot: ReportSnapshot) -> list[str]:
    """Every pod of the snapshot."""
    return [pod for group in snapshot for pod in group.pods]


def _next_in(spec: RolloutSpec, state: RolloutState, now: float) -> float | None:
    """Seconds to the next moment the rollout may move: a judgement, or the end of a pause."""
    if state.phase == "Paused" or state.held_by_failures:
        return None
    moments = []
    judged_from = state.step_started + spec.initial_delay_seconds
    if state.last_judged is not None:
        judged_from = max(judged_from, state.last_judged + spec.interval_seconds)
    moments.append(judged_from)
    step = spec.steps[min(state.step, len(spec.steps) - 1)]
    if state.passes_in_step and not step.manual:
        moments.append(state.step_started + step.pause_seconds)
    soonest = min(moments)
    return max(MIN_WAIT, soonest - now) if math.isfinite(soonest) else None


def _events(
    before: RolloutState | None, after: RolloutState, spec: RolloutSpec
) -> list[tuple[str, str, str]]:
    """The Events of a change of a rollout: a new rollout, each step, each decision."""
    if (
        before is not None
        and dataclasses.astuple(before)[:3] == dataclasses.astuple(after)[:3]
        and (before.step == after.step)
    ):
        return []
    canary = after.canary_hash[:12]
    percent = spec.steps[min(after.step, len(spec.steps) - 1)].percent
    if after.phase == "Promoted":
        if before is None or before.phase == "Promoted":
            return []
        return [
            ("Normal", "RolloutPromoted", f"version {canary} is promoted: every pod runs it ({after.reason})")
        ]
    if after.phase == "RolledBack":
        return [("Warning", "RolloutRolledBack", f"version {canary} was rolled back: {after.reason}")]
    if after.phase == "Held":
        return [("Warning", "RolloutHeld", f"rollout of version {canary} held at {percent}%: {after.reason}")]
    if after.phase == "Paused":
        return [
            (
                "Normal",
                "RolloutPaused",
                f"rollout of version {canary} paused at {percent}%: waiting for promote",
            )
        ]
    return [
        ("Normal", "RolloutStep", f"version {canary} rolls out to {percent}% of the pods ({after.reason})")
    ]

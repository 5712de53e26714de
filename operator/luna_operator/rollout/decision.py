"""Where a rollout goes next: a pure function of the spec, the state ``status.rollout`` keeps, the
time, a judgement and a user's command.

The phases (``status.rollout.phase``):

- ``Progressing``: the canary runs at the current step's share and is judged every interval;
  the step is done once a judgement succeeded in it and its pause has passed; after the last
  step (100 %) the canary is promoted;
- ``Paused``: a ``manual`` step is done and waits for ``promote``;
- ``Held``: judgements are inconclusive and ``onInconclusive`` is ``Hold``, or the canary failed
  ``failureLimit`` times without ``autoRollback``; a successful judgement resumes the first, a
  user (``promote`` or ``abort``) the second;
- ``Promoted``: the canary is the stable version now; every pod runs it;
- ``RolledBack``: the canary failed (or was aborted); every pod runs the stable version. The
  same code is not rolled out again until it changes or a user asks (``retry``).

Failed judgements count across the whole rollout; ``onInconclusive: Rollback`` counts an
inconclusive judgement as a failed one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from luna_contract.rollout import RolloutSpec
from luna_operator.rollout.analysis import Judgement, QueryFigure

Phase = Literal["Progressing", "Paused", "Held", "Promoted", "RolledBack"]
Command = Literal["promote", "abort", "retry"]
#: judgements kept in ``status.rollout.analyses``
KEPT_ANALYSES = 5
#: seconds a step waits, at least, for a pod to report running the canary before judging it: the
#: judgements due meanwhile are put off (not inconclusive), since the sidecars need a moment to
#: load the version they were just given; past it, no pod running it is inconclusive
CANARY_REPORT_GRACE = 60.0


@dataclass(frozen=True)
class Analysis:
    """One judgement as ``status.rollout.analyses`` keeps it."""

    at: float
    step: int
    verdict: str
    message: str
    queries: tuple[QueryFigure, ...] = ()
    """each PromQL query's figure"""


@dataclass(frozen=True)
class RolloutState:
    """What ``status.rollout`` keeps between passes (and operator restarts)."""

    phase: Phase
    canary_hash: str
    stable_hash: str | None
    step: int = 0
    step_started: float = 0.0
    failures: int = 0
    """failed judgements of this rollout"""
    passes_in_step: int = 0
    last_judged: float | None = None
    held_by_failures: bool = False
    """Held because of ``failureLimit`` without ``autoRollback`` (only a user moves it on)"""
    reason: str = ""
    """why the rollout is where it is, for status and Events"""
    analyses: tuple[Analysis, ...] = ()
    pods: tuple[str, ...] = ()
    """the pods that run the canary (kept by the caller: which pods is not a decision here)"""
    handled_command: str | None = None
    """the last user's command acted on (the annotation's value), so it is acted on once"""

    @property
    def running_version(self) -> str | None:
        """The version pods outside the canary run (and all pods, once settled)."""
        if self.phase == "Promoted":
            return self.canary_hash
        return self.stable_hash

    @property
    def active(self) -> bool:
        """Whether some pods may run the canary now."""
        return self.phase in ("Progressing", "Paused", "Held")


def begin(
    code_hash: str, state: RolloutState | None, now: float, in_service: str | None = None
) -> RolloutState:
    """The state once the spec's code is ``code_hash``: unchanged for the code of ``state``; a
    new rollout from the version in service otherwise (``state``'s, or without a state,
    ``in_service``). The first version of a plugin (nothing in service) is promoted at once:
    there is nothing to compare it with, nothing to fall back to."""
    if state is None:
        if in_service is not None and in_service != code_hash:
            return RolloutState("Progressing", code_hash, in_service, step_started=now, reason="new version")
        return RolloutState("Promoted", code_hash, None, reason="first version")
    if code_hash == state.canary_hash:
        return state
    stable = state.running_version
    if code_hash == stable or stable is None:  # back to the version in service: nothing to roll out
        return RolloutState(
            "Promoted",
            code_hash,
            None,
            reason="the version in service",
            handled_command=state.handled_command,
        )
    return RolloutState(
        "Progressing",
        code_hash,
        stable,
        step_started=now,
        reason="new version",
        handled_command=state.handled_command,
    )


def judgement_due(spec: RolloutSpec, state: RolloutState, now: float) -> bool:
    """Whether the canary is to be judged now: the rollout is progressing or held, the step's
    initial delay has passed, and an interval since the last judgement."""
    if state.phase not in ("Progressing", "Held") or state.held_by_failures:
        return False
    if now - state.step_started < spec.initial_delay_seconds:
        return False
    return state.last_judged is None or now - state.last_judged >= spec.interval_seconds


def awaiting_canary(spec: RolloutSpec, state: RolloutState, now: float, canary_reported: bool) -> bool:
    """Whether a judgement due now is put off: no pod reports running the canary yet and the step
    started less than :data:`CANARY_REPORT_GRACE` (or one ``interval``, if longer) ago."""
    grace = max(CANARY_REPORT_GRACE, spec.interval_seconds)
    return not canary_reported and now - state.step_started < grace


def _moved(state: RolloutState, spec: RolloutSpec, now: float, reason: str) -> RolloutState:
    """The next step, or promoted after the last."""
    if state.step + 1 >= len(spec.steps):
        return dataclasses.replace(
            state, phase="Promoted", step=len(spec.steps) - 1, held_by_failures=False, reason=reason
        )
    return dataclasses.replace(
        state,
        phase="Progressing",
        step=state.step + 1,
        step_started=now,
        passes_in_step=0,
        last_judged=None,
        held_by_failures=False,
        reason=reason,
    )


def _failed(state: RolloutState, spec: RolloutSpec, reason: str) -> RolloutState:
    failures = state.failures + 1
    if failures < spec.analysis.failure_limit:
        return dataclasses.replace(state, failures=failures, reason=reason)
    if spec.auto_rollback:
        return dataclasses.replace(state, phase="RolledBack", failures=failures, reason=reason)
    return dataclasses.replace(state, phase="Held", failures=failures, held_by_failures=True, reason=reason)


def advance(
    spec: RolloutSpec,
    state: RolloutState,
    now: float,
    judgement: Judgement | None = None,
    command: Command | None = None,
) -> RolloutState:
    """The state after ``command`` (a user's), then ``judgement`` (when one was due), then the
    passing of time. A command that does not apply to the phase changes nothing."""
    if command == "abort" and state.active:
        return dataclasses.replace(
            state, phase="RolledBack", held_by_failures=False, reason="aborted by a user"
        )
    if command == "retry" and state.phase == "RolledBack" and state.stable_hash is not None:
        return RolloutState(
            "Progressing",
            state.canary_hash,
            state.stable_hash,
            step_started=now,
            reason="retried by a user",
            handled_command=state.handled_command,
        )
    if command == "promote" and state.active:
        return _moved(state, spec, now, "promoted by a user")
    if not state.active:
        return state
    if judgement is not None:
        kept = (
            *state.analyses,
            Analysis(now, state.step, judgement.verdict, judgement.message, judgement.queries),
        )
        state = dataclasses.replace(state, last_judged=now, analyses=kept[-KEPT_ANALYSES:])
        if judgement.verdict == "Failed" or (
            judgement.verdict == "Inconclusive" and spec.analysis.on_inconclusive == "Rollback"
        ):
            state = _failed(state, spec, judgement.message)
            if state.phase != "Progressing" or state.held_by_failures:
                return state
        elif judgement.verdict == "Inconclusive":
            if not state.held_by_failures:
                state = dataclasses.replace(state, phase="Held", reason=judgement.message)
            return state
        elif not state.held_by_failures:
            state = dataclasses.replace(
                state, phase="Progressing", passes_in_step=state.passes_in_step + 1, reason=judgement.message
            )
    if state.phase != "Progressing" or state.passes_in_step == 0:
        return state
    step = spec.steps[min(state.step, len(spec.steps) - 1)]
    if step.manual:
        return dataclasses.replace(state, phase="Paused", reason="waiting for promote")
    if now - state.step_started < step.pause_seconds:
        return state
    return _moved(state, spec, now, f"step {state.step} healthy")

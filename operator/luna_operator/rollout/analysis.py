"""One judgement of a canary: its pods' report counters over a window, against the stable pods'.

Per pod and version the sidecar reports counters since the version loaded (:class:`PodSample`).
A judgement takes two snapshots, the window's start and end, and for each pod the difference (a
counter that went down means the sidecar restarted: the end value is the window's count):

- a canary pod that could not load the canary fails the judgement at once;
- a canary pod whose event loop was blocked for more than half the window fails it;
- each canary pod's failure ratio is (failed callbacks + 5xx route answers + dropped batches +
  new dead letters) / (callbacks + route answers + dropped batches + new dead letters); the worst
  canary pod is judged, not an average. It fails when that ratio is above ``maxFailureRatio``
  and above the stable pods' pooled ratio by more than ``maxFailureRatio`` (a sink that is down
  for every pod is not the canary's fault);
- no canary pod with traffic, or no canary pod reporting: inconclusive.

Dead letters are a level (what an at-least-once plugin's delivery holds now), not a count since
the version loaded: the new ones of a window are the rise over the pod's previous sample, of
whichever version (the queue outlives a version). A pod without a previous sample (its first
report in the rollout, the first judgement after an operator restart) only sets the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["Successful", "Failed", "Inconclusive"]
#: share of the window a canary pod's event loop may be blocked
MAX_BLOCKED_SHARE = 0.5


@dataclass(frozen=True)
class PodSample:
    """One pod's counters for one version of the plugin, cumulative since that version loaded."""

    pod: str
    code_hash: str
    callbacks: int = 0
    """event callbacks that finished, well or not"""
    failed_callbacks: int = 0
    """of those, raised or timed out"""
    route_answers: int = 0
    route_errors: int = 0
    """route answers with a 5xx status"""
    dropped: int = 0
    """batches the runtime dropped for this plugin, any reason"""
    loop_blocked_seconds: float = 0.0
    load_failed: bool = False
    dead_letters: int = 0
    """dead letters the plugin's durable delivery holds now (a level: see the module docstring)"""


@dataclass(frozen=True)
class QueryFigure:
    """One PromQL query's part in a judgement (``spec.rollout.analysis.queries``)."""

    name: str
    verdict: Verdict
    value: float | None
    """the worst value it returned (None: no value, see ``message``)"""
    message: str


@dataclass(frozen=True)
class Judgement:
    """The outcome of one judgement and the figures behind it (kept in ``status.rollout``)."""

    verdict: Verdict
    message: str
    worst_pod: str | None = None
    worst_ratio: float | None = None
    stable_ratio: float | None = None
    ratios: Mapping[str, float] = field(default_factory=dict)
    """failure ratio per canary pod with traffic"""
    queries: tuple[QueryFigure, ...] = ()
    """each PromQL query's figure (:mod:`.queries`)"""


def _delta(before: PodSample | None, now: PodSample) -> tuple[int, int, float]:
    """(failures, total, blocked seconds) over the window."""
    fields = ("callbacks", "failed_callbacks", "route_answers", "route_errors", "dropped")
    start = before if before is not None and before.code_hash == now.code_hash else None
    values: dict[str, int] = {}
    for name in fields:
        end = int(getattr(now, name))
        begin = int(getattr(start, name)) if start is not None else 0
        values[name] = end - begin if end >= begin else end  # went down: the sidecar restarted
    blocked_end = now.loop_blocked_seconds
    blocked_begin = start.loop_blocked_seconds if start is not None else 0.0
    blocked = blocked_end - blocked_begin if blocked_end >= blocked_begin else blocked_end
    dead = max(now.dead_letters - before.dead_letters, 0) if before is not None else 0
    failures = values["failed_callbacks"] + values["route_errors"] + values["dropped"] + dead
    total = values["callbacks"] + values["route_answers"] + values["dropped"] + dead
    return failures, total, blocked


def judge(
    before: Mapping[str, PodSample],
    now: Mapping[str, PodSample],
    canary_hash: str,
    *,
    max_failure_ratio: float,
    window_seconds: float,
) -> Judgement:
    """Judge the canary ``canary_hash`` from the snapshots ``before`` and ``now`` (by pod name)
    over a window of ``window_seconds`` (module docstring)."""
    ratios: dict[str, float] = {}
    stable_failures = stable_total = 0
    canary_pods = 0
    for pod, sample in sorted(now.items()):
        if sample.code_hash != canary_hash:
            failures, total, _ = _delta(before.get(pod), sample)
            stable_failures += failures
            stable_total += total
            continue
        canary_pods += 1
        if sample.load_failed:
            return Judgement("Failed", f"pod {pod} could not load the canary", worst_pod=pod)
        failures, total, blocked = _delta(before.get(pod), sample)
        if window_seconds > 0 and blocked > MAX_BLOCKED_SHARE * window_seconds:
            return Judgement(
                "Failed",
                f"the canary blocked the event loop of pod {pod} for {blocked:.1f} s "
                f"of {window_seconds:.0f} s",
                worst_pod=pod,
            )
        if total > 0:
            ratios[pod] = failures / total
    stable_ratio = stable_failures / stable_total if stable_total else 0.0
    if not canary_pods:
        return Judgement("Inconclusive", "no pod reports running the canary", stable_ratio=stable_ratio)
    if not ratios:
        return Judgement(
            "Inconclusive", "no callbacks or route answers on the canary pods", stable_ratio=stable_ratio
        )
    worst_pod = max(sorted(ratios), key=lambda pod: ratios[pod])
    worst = ratios[worst_pod]
    figures = f"{worst:.1%} failed on pod {worst_pod} against {stable_ratio:.1%} on stable pods"
    if worst > max_failure_ratio and worst > stable_ratio + max_failure_ratio:
        verdict: Verdict = "Failed"
        message = f"{figures} (limit {max_failure_ratio:.1%})"
    else:
        verdict = "Successful"
        message = figures
    return Judgement(verdict, message, worst_pod, worst, stable_ratio, ratios)

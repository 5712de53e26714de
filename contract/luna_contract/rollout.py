"""A staged rollout of a LunaPlugin's new version, as typed structures (``spec.rollout``).

The names are fixed by the API users write::

    rollout:
      steps:                          # share of the service's reporting pods; the last is 100
        - {percent: 25, pause: 30s}   # pause: a duration ("30s", "5m") or "manual"
        - {percent: 100}
      analysis:
        interval: 10s                 # how often the canary is judged
        initialDelay: 0s
        failureLimit: 2               # failed judgements before a rollback
        maxFailureRatio: 0.05         # failed callbacks + 5xx route answers / all, per canary pod
        onInconclusive: Hold          # or Rollback
        queries:                      # optional: PromQL the operator asks its Prometheus
          - name: error-rate
            query: sum(rate(http_errors_total{pod=~$canaryPods}[$window]))
            maxValue: 0.5
      autoRollback: true

:func:`read_rollout` decodes one strictly and checks what the shape alone cannot (steps rising
to 100, the placeholders of each query). Durations are read by :func:`duration_seconds`, a query's
placeholders found by :func:`query_parts`.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

__all__ = [
    "MANUAL",
    "PLACEHOLDERS",
    "AnalysisQuery",
    "Placeholder",
    "RolloutAnalysis",
    "RolloutError",
    "RolloutSpec",
    "RolloutStep",
    "duration_seconds",
    "query_parts",
    "read_rollout",
]

MANUAL = "manual"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: the longest duration a rollout takes anywhere (a week)
MAX_SECONDS = 7 * 86_400.0

Duration = Annotated[
    str, Meta(pattern=DURATION, max_length=32, description='A duration: "30s", "5m", "1h30m".')
]


class RolloutError(ValueError):
    """A rollout is not shaped as documented; the message names the field."""


def duration_seconds(text: str) -> float:
    """``text`` ("500ms", "30s", "1h30m") in seconds; raises :class:`RolloutError` for anything
    else or above :data:`MAX_SECONDS`."""
    if not re.fullmatch(DURATION, text):
        raise RolloutError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(float(number) * _UNIT[unit] for number, unit in _PART.findall(text))
    if seconds > MAX_SECONDS:
        raise RolloutError(f"{text!r} is longer than a week")
    return seconds


class RolloutStep(Struct, frozen=True, omit_defaults=True):
    """One step: the canary runs on ``percent`` of the reporting pods, then waits ``pause``
    (a duration, or ``manual``: until ``luna-plugins rollout promote``)."""

    percent: Annotated[
        int, Meta(ge=1, le=100, description="Share of the service's reporting pods that run the new version.")
    ]
    pause: (
        Annotated[
            str,
            Meta(
                pattern=r"^(manual|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$",
                max_length=32,
                description='How long to stay at this step once judged healthy: a duration, or "manual".',
            ),
        ]
        | None
    ) = None

    @property
    def manual(self) -> bool:
        """True when only a user moves the rollout past this step."""
        return self.pause == MANUAL

    @property
    def pause_seconds(self) -> float:
        """Seconds to stay at this step (0 without a pause; 0 for ``manual`` too: see :attr:`manual`)."""
        return 0.0 if self.pause in (None, MANUAL) else duration_seconds(str(self.pause))


#: what a query's ``$name`` stands for (the operator fills them in: see docs/rollouts.md)
PLACEHOLDERS = {
    "namespace": "the plugin's namespace",
    "service": "the plugin's service",
    "plugin": "the LunaPlugin's name",
    "module": "the plugin's module",
    "canaryPods": "a regular expression matching exactly the pods that run the new version",
    "stablePods": "a regular expression matching exactly the other reporting pods",
    "canaryHash": "the new version's code hash",
    "stableHash": "the code hash of the version in service",
    "window": "the time since the last judgement, as a PromQL duration (e.g. 10s)",
}
#: the longest query (before its placeholders are filled)
MAX_QUERY_CHARS = 2000
_PLACEHOLDER = re.compile(r"\$(\$|[A-Za-z_][A-Za-z0-9_]*)")


class Placeholder(Struct, frozen=True):
    """One ``$name`` of a query; ``quote`` is the quote of the PromQL string it stands in (None:
    outside any string, where it stands for a whole string literal, quotes included)."""

    name: str
    quote: str | None = None


def query_parts(query: str) -> list[str | Placeholder]:
    """``query`` as text and placeholders, in order; ``$$`` is a ``$``. Raises
    :class:`RolloutError` for an unknown ``$name`` and for one inside a raw (backtick) string,
    which has no escapes to keep a value inside it."""
    parts: list[str | Placeholder] = []
    text: list[str] = []
    quote: str | None = None
    at = 0
    while at < len(query):
        char = query[at]
        if quote is None and char == "#":  # a comment, to the end of the line
            end = query.find("\n", at)
            end = len(query) if end < 0 else end
            text.append(query[at:end])
            at = end
            continue
        if quote in ('"', "'") and char == "\\":  # an escape: the next character is the string's
            text.append(query[at : at + 2])
            at += 2
            continue
        if char == "$":
            found = _PLACEHOLDER.match(query, at)
            if found is not None and found.group(1) == "$":
                text.append("$")
                at = found.end()
                continue
            if found is not None:
                name = found.group(1)
                if name not in PLACEHOLDERS:
                    raise RolloutError(
                        f"${name} is not a placeholder; use one of "
                        + ", ".join(f"${known}" for known in PLACEHOLDERS)
                        + " (or $$ for a $)"
                    )
                if quote == "`":
                    raise RolloutError(f"${name} cannot stand in a raw `string`: use a quoted one")
                parts.extend(["".join(text), Placeholder(name, quote)])
                text = []
                at = found.end()
                continue
        if quote is None and char in ('"', "'", "`"):
            quote = char
        elif char == quote:
            quote = None
        text.append(char)
        at += 1
    parts.append("".join(text))
    return [part for part in parts if part != ""]


class AnalysisQuery(Struct, frozen=True, rename="camel", omit_defaults=True):
    """A PromQL query the operator asks its Prometheus at each judgement; every value it returns
    (the worst one counts) must stay within ``maxValue`` and ``minValue``."""

    name: Annotated[
        str,
        Meta(
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            max_length=63,
            description="Names the query in judgements and status (lowercase letters, digits, '-').",
        ),
    ]
    query: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            description="PromQL (an instant query) with placeholders the operator fills in: $namespace, "
            "$service, $plugin, $module, $canaryPods, $stablePods, $canaryHash, $stableHash, $window "
            "(docs/rollouts.md).",
        ),
    ]
    max_value: Annotated[
        float | None, Meta(description="The judgement fails when a value is above this.")
    ] = None
    min_value: Annotated[
        float | None, Meta(description="The judgement fails when a value is below this.")
    ] = None


class RolloutAnalysis(Struct, frozen=True, rename="camel", omit_defaults=True):
    """How the canary is judged: every ``interval`` once ``initialDelay`` has passed in a step;
    ``failureLimit`` failed judgements roll it back (with ``autoRollback``)."""

    interval: Annotated[Duration, Meta(description="How often the canary is judged.")] = "10s"
    initial_delay: Annotated[Duration, Meta(description="Time in each step before the first judgement.")] = (
        "0s"
    )
    failure_limit: Annotated[int, Meta(ge=1, le=1000, description="Failed judgements before a rollback.")] = 2
    max_failure_ratio: Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="Failed callbacks and 5xx route answers over all of them, per canary pod, above "
            "which (and above the stable pods' ratio by as much) a judgement fails.",
        ),
    ] = 0.05
    on_inconclusive: Annotated[
        Literal["Hold", "Rollback"],
        Meta(
            description="When a judgement has no data (no traffic, no reports): Hold the step, or Rollback."
        ),
    ] = "Hold"
    queries: Annotated[
        list[
            Annotated[
                AnalysisQuery,
                Meta(
                    extra_json_schema={
                        "x-kubernetes-validations": [
                            {
                                "rule": "has(self.maxValue) || has(self.minValue)",
                                "message": "a query needs maxValue, minValue or both",
                            }
                        ]
                    }
                ),
            ]
        ],
        Meta(
            max_length=10,
            description="PromQL queries judged with the built-in analysis, against the Prometheus the "
            "operator is given (--prometheus-url); no answer, an error or no value is inconclusive.",
            extra_json_schema={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = field(default_factory=list)


class RolloutSpec(Struct, frozen=True, rename="camel", omit_defaults=True):
    """``spec.rollout``: the steps a new version takes, how it is judged, whether a failing one
    is rolled back by itself."""

    steps: Annotated[
        list[RolloutStep], Meta(min_length=1, max_length=20, description="The steps; the last one is 100.")
    ]
    analysis: RolloutAnalysis = field(default_factory=RolloutAnalysis)
    auto_rollback: Annotated[
        bool, Meta(description="Roll a failing canary back by itself (else it is held for a user).")
    ] = True

    @property
    def interval_seconds(self) -> float:
        """The analysis interval in seconds."""
        return duration_seconds(self.analysis.interval)

    @property
    def initial_delay_seconds(self) -> float:
        """The analysis's initial delay in seconds."""
        return duration_seconds(self.analysis.initial_delay)


def read_rollout(value: Any) -> RolloutSpec:
    """``value`` (decoded JSON, camelCase keys) as a rollout; raises :class:`RolloutError` naming
    the field: a wrong shape, shares that do not rise, a last step below 100, a bad duration."""
    try:
        rollout = msgspec.convert(value, RolloutSpec)
    except msgspec.ValidationError as exc:
        raise RolloutError(f"spec.rollout: {exc}") from None
    shares = [step.percent for step in rollout.steps]
    if any(later <= earlier for earlier, later in itertools.pairwise(shares)):
        raise RolloutError(f"spec.rollout.steps: the shares must rise from step to step, got {shares}")
    if shares[-1] != 100:
        raise RolloutError(f"spec.rollout.steps: the last step must be 100 percent, got {shares[-1]}")
    for at, step in enumerate(rollout.steps):
        try:
            step.pause_seconds  # noqa: B018 - checks the duration
        except RolloutError as exc:
            raise RolloutError(f"spec.rollout.steps[{at}].pause: {exc}") from None
    for name in ("interval", "initial_delay"):
        try:
            seconds = duration_seconds(getattr(rollout.analysis, name))
        except RolloutError as exc:
            raise RolloutError(f"spec.rollout.analysis.{_camel(name)}: {exc}") from None
        if name == "interval" and seconds < 1:
            raise RolloutError("spec.rollout.analysis.interval: at least 1s")
    seen: set[str] = set()
    for at, query in enumerate(rollout.analysis.queries):
        where = f"spec.rollout.analysis.queries[{at}]"
        if query.name in seen:
            raise RolloutError(f"{where}.name: {query.name!r} names two queries")
        seen.add(query.name)
        if query.max_value is None and query.min_value is None:
            raise RolloutError(f"{where}: a query needs maxValue, minValue or both")
        try:
            query_parts(query.query)
        except RolloutError as exc:
            raise RolloutError(f"{where}.query: {exc}") from None
    return rollout


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)

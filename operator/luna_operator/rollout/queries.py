"""The PromQL part of a judgement (``spec.rollout.analysis.queries``), as pure functions.

- :func:`fill`: a query with its placeholders filled in. A value never leaves the place of its
  placeholder: inside a quoted PromQL string it is escaped for that string; outside any string it
  becomes a whole string literal (``$namespace`` -> ``"shop"``), except ``$window``, a duration
  (``30s``). ``$canaryPods`` and ``$stablePods`` are regular expressions (RE2, as Prometheus reads
  them) matching exactly those pods, each name escaped; no pod at all is a regular expression
  that matches nothing.
- :func:`judge_values`: the values a query returned against its ``maxValue`` / ``minValue``: the
  worst value counts (the highest for ``maxValue``, the lowest for ``minValue``); no value, or only
  NaN, is inconclusive.
- :func:`combine`: the built-in judgement and the queries' figures as one judgement: failed when
  any part failed, else inconclusive when any part was, else successful.

The operator asks Prometheus (:mod:`luna_operator.prometheus`) through a :class:`QuerySource`;
anything that keeps it from a number (no answer, an error answer, a timeout, an answer too big
or not understood) is a :class:`QueryError` and makes that query inconclusive, never successful.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from luna_contract.rollout import AnalysisQuery, Placeholder, query_parts
from luna_operator.rollout.analysis import Judgement, QueryFigure, Verdict

__all__ = [
    "NO_POD",
    "QueryContext",
    "QueryError",
    "QuerySource",
    "combine",
    "escape_string",
    "fill",
    "inconclusive",
    "judge_values",
    "pods_regex",
    "promql_duration",
]

#: a regular expression that matches no string at all (RE2 has no empty alternation that does)
NO_POD = r"[^\s\S]"
#: characters RE2 reads as syntax, escaped in a pod name
_REGEX_SYNTAX = re.compile(r"([\\.+*?()|\[\]{}^$])")


class QueryError(Exception):
    """A query gave no number to judge; the message says why (for status and Events)."""


class QuerySource(Protocol):
    """Where queries are asked: an instant query's sample values, or :class:`QueryError`."""

    async def query(self, expression: str) -> list[float]: ...


@dataclass(frozen=True)
class QueryContext:
    """What a query's placeholders stand for in one judgement."""

    namespace: str
    service: str
    plugin: str
    module: str
    canary_pods: Sequence[str]
    stable_pods: Sequence[str]
    canary_hash: str
    stable_hash: str
    window_seconds: float


def promql_duration(seconds: float) -> str:
    """``seconds`` as a PromQL duration in whole seconds, at least ``1s``."""
    whole = math.ceil(seconds) if math.isfinite(seconds) else 1
    return f"{max(1, whole)}s"


def pods_regex(pods: Iterable[str]) -> str:
    """A regular expression matching exactly ``pods`` (Prometheus anchors it), or nothing."""
    names = sorted(set(pods))
    if not names:
        return NO_POD
    return "|".join(_REGEX_SYNTAX.sub(r"\\\1", name) for name in names)


def escape_string(value: str, quote: str) -> str:
    """``value`` as the inside of a PromQL string quoted by ``quote`` (``"`` or ``'``)."""
    out = []
    for char in value:
        if char in ("\\", quote):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _value(name: str, context: QueryContext) -> str:
    return {
        "namespace": context.namespace,
        "service": context.service,
        "plugin": context.plugin,
        "module": context.module,
        "canaryPods": pods_regex(context.canary_pods),
        "stablePods": pods_regex(context.stable_pods),
        "canaryHash": context.canary_hash,
        "stableHash": context.stable_hash,
        "window": promql_duration(context.window_seconds),
    }[name]


def fill(query: str, context: QueryContext) -> str:
    """``query`` with each placeholder replaced as the module docstring says; raises
    :class:`~luna_contract.rollout.RolloutError` for a query :func:`~luna_contract.rollout.read_rollout`
    refuses too."""
    out = []
    for part in query_parts(query):
        if not isinstance(part, Placeholder):
            out.append(part)
            continue
        value = _value(part.name, context)
        if part.quote is not None:
            out.append(escape_string(value, part.quote))
        elif part.name == "window":
            out.append(value)
        else:
            out.append('"' + escape_string(value, '"') + '"')
    return "".join(out)


def _figure(value: float) -> str:
    return f"{value:.6g}"


def inconclusive(query: AnalysisQuery, why: str) -> QueryFigure:
    """The figure of a query that gave no number (``why`` says what kept it from one)."""
    return QueryFigure(query.name, "Inconclusive", None, f"{query.name}: no value ({why})")


def judge_values(query: AnalysisQuery, values: Sequence[float]) -> QueryFigure:
    """The figure of ``query`` from the sample values it returned (module docstring)."""
    numbers = [value for value in values if not math.isnan(value)]
    if not numbers:
        return inconclusive(query, "the result was empty" if not values else "the result was NaN")
    highest, lowest = max(numbers), min(numbers)
    if query.max_value is not None and highest > query.max_value:
        return QueryFigure(
            query.name,
            "Failed",
            highest,
            f"{query.name}: {_figure(highest)} above {_figure(query.max_value)}",
        )
    if query.min_value is not None and lowest < query.min_value:
        return QueryFigure(
            query.name, "Failed", lowest, f"{query.name}: {_figure(lowest)} below {_figure(query.min_value)}"
        )
    worst = highest if query.max_value is not None else lowest
    bounds = []
    if query.min_value is not None:
        bounds.append(f"min {_figure(query.min_value)}")
    if query.max_value is not None:
        bounds.append(f"max {_figure(query.max_value)}")
    return QueryFigure(
        query.name, "Successful", worst, f"{query.name}: {_figure(worst)} ({', '.join(bounds)})"
    )


def combine(built_in: Judgement, figures: Sequence[QueryFigure]) -> Judgement:
    """``built_in`` with the queries' ``figures``: the worst verdict of all (failed, then
    inconclusive, then successful); the message leads with what decided it."""
    if not figures:
        return built_in
    order: dict[Verdict, int] = {"Failed": 0, "Inconclusive": 1, "Successful": 2}
    verdict = min([built_in.verdict, *(f.verdict for f in figures)], key=order.__getitem__)
    deciding = [f.message for f in figures if f.verdict == verdict]
    others = [f.message for f in figures if f.verdict != verdict]
    if built_in.verdict == verdict:
        parts = [built_in.message, *deciding, *others]
    else:
        parts = [*deciding, built_in.message, *others]
    return dataclasses.replace(built_in, verdict=verdict, message="; ".join(parts), queries=tuple(figures))

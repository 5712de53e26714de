"""The PromQL part of a judgement: placeholders filled without a way out of their place, answers
read (hostile ones included), values judged, verdicts combined; and the planner asking a source
that fails in every way a Prometheus can."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from luna_contract.rollout import AnalysisQuery
from luna_operator.desired import CheckedCode, decide
from luna_operator.prometheus import read_answer
from luna_operator.rollout.analysis import Judgement
from luna_operator.rollout.planner import RolloutPlanner
from luna_operator.rollout.queries import (
    NO_POD,
    QueryContext,
    QueryError,
    combine,
    escape_string,
    fill,
    judge_values,
    pods_regex,
    promql_duration,
)
from luna_operator.validation import check_spec
from tests.operator.rollout.planning import CANARY_CODE, in_service, judged, plugin, rollout

CONTEXT = QueryContext(
    namespace="shop",
    service="handlers",
    plugin="event-sender",
    module="event_sender",
    canary_pods=["handlers-7d9.b", "handlers-1"],
    stable_pods=[],
    canary_hash="2" * 64,
    stable_hash="1" * 64,
    window_seconds=9.2,
)


def test_placeholders_become_string_literals_outside_strings_and_escaped_text_inside() -> None:
    query = 'sum(rate(x{namespace=$namespace, pod=~$canaryPods, job="$service-metrics"}[$window]))'
    assert fill(query, CONTEXT) == (
        'sum(rate(x{namespace="shop", pod=~"handlers-1|handlers-7d9\\\\.b", job="handlers-metrics"}[10s]))'
    )
    assert fill("x{pod=~'$stablePods'} $$", CONTEXT) == "x{pod=~'[^\\\\s\\\\S]'} $"


def test_a_value_cannot_leave_its_string() -> None:
    hostile = QueryContext(**{**CONTEXT.__dict__, "plugin": 'a"} or vector(1) #\\', "canary_pods": ['p"|.*']})
    filled = fill('x{plugin="$plugin"} and y{pod=~$canaryPods} and z{plugin=$plugin}', hostile)
    assert filled == (
        'x{plugin="a\\"} or vector(1) #\\\\"} and y{pod=~"p\\"\\\\|\\\\.\\\\*"} and '
        'z{plugin="a\\"} or vector(1) #\\\\"}'
    )
    assert escape_string("it's\n\x00", "'") == "it\\'s\\n\\x00"


def test_pod_names_are_matched_exactly() -> None:
    assert pods_regex(["b", "a.b", "a.b"]) == "a\\.b|b"
    assert pods_regex([]) == NO_POD
    assert (
        promql_duration(0.2) == "1s" and promql_duration(60.0) == "60s" and promql_duration(math.inf) == "1s"
    )


def q(**bounds: float) -> AnalysisQuery:
    return AnalysisQuery("errors", "x", max_value=bounds.get("max"), min_value=bounds.get("min"))


def test_the_worst_value_is_judged() -> None:
    assert judge_values(q(max=0.5), [0.1, 0.4]).verdict == "Successful"
    failed = judge_values(q(max=0.5), [0.1, 0.9, 0.2])
    assert (failed.verdict, failed.value, failed.message) == ("Failed", 0.9, "errors: 0.9 above 0.5")
    assert (
        judge_values(q(min=10), [12, 9]).value == 9 and judge_values(q(min=10), [12, 9]).verdict == "Failed"
    )
    within = judge_values(q(min=1, max=5), [2, 3])
    assert (within.verdict, within.value, within.message) == ("Successful", 3, "errors: 3 (min 1, max 5)")
    assert judge_values(q(max=1), [math.inf]).verdict == "Failed"
    # no number: never a success
    assert judge_values(q(max=1), []).verdict == "Inconclusive"
    assert judge_values(q(max=1), [math.nan]).verdict == "Inconclusive"
    assert judge_values(q(max=1), [math.nan, 0.5]).verdict == "Successful"


def test_the_worst_verdict_wins_and_leads_the_message() -> None:
    ok = Judgement("Successful", "1.0% failed")
    figures = [judge_values(q(max=0.5), [0.1]), judge_values(q(max=0.5), [])]
    both = combine(ok, figures)
    assert both.verdict == "Inconclusive" and both.message.startswith("errors: no value")
    assert both.queries == tuple(figures)
    failed = combine(Judgement("Inconclusive", "no traffic"), [*figures, judge_values(q(max=0.5), [2])])
    assert failed.verdict == "Failed" and failed.message.startswith("errors: 2 above 0.5")
    assert combine(ok, []) is ok


def answer(kind: str, result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


def test_answers_are_read_as_sample_values() -> None:
    assert read_answer(answer("scalar", [1.5, "2"])) == [2.0]
    vector = [{"metric": {"pod": "a"}, "value": [1.5, "0.25"]}, {"metric": {}, "value": [1.5, "NaN"]}]
    values = read_answer(answer("vector", vector))
    assert values[0] == 0.25 and math.isnan(values[1])
    assert read_answer(answer("vector", [])) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>bad gateway</html>", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"status": "error", "error": "parse error" * 100}).encode(), "refused the query: parse"),
        (json.dumps({"status": "error"}).encode(), "no reason given"),
        (answer("matrix", []), "returned a matrix"),
        (answer("string", [1, "x"]), "returned a string"),
        (answer("vector", {"a": 1}), "not a list"),
        (answer("vector", [1]), "not an object"),
        (answer("vector", [{"value": [1, "fast"]}]), "not a number"),
        (answer("vector", [{"value": [1, 2]}]), "not \\[time, value\\]"),
        (answer("scalar", None), "not \\[time, value\\]"),
    ],
)
def test_answers_without_numbers_are_query_errors(body: bytes, expected: str) -> None:
    with pytest.raises(QueryError, match=expected) as caught:
        read_answer(body)
    assert len(str(caught.value)) < 300


class Source:
    """A Prometheus stand-in: the values (or the error) every query gets; what it was asked."""

    def __init__(self, values: list[float] | None = None, error: str | None = None) -> None:
        self.values, self.error = values or [], error
        self.asked: list[str] = []

    async def query(self, expression: str) -> list[float]:
        self.asked.append(expression)
        if self.error is not None:
            raise QueryError(self.error)
        return self.values


QUERY = {
    "name": "errors",
    "query": "max(errors{namespace=$namespace, pod=~$canaryPods}[$window])",
    "maxValue": 1,
}


async def test_a_judgement_asks_each_query_about_the_canary_pods_and_keeps_its_figure() -> None:
    source = Source([0.5])
    plan = await judged(RolloutPlanner(source), rollout([QUERY]))
    (asked,) = source.asked
    assert asked.startswith('max(errors{namespace="shop", pod=~"handlers-') and asked.endswith('"}[11s])')
    status = plan.outcome.rollout
    assert status is not None and status["phase"] == "Progressing" and status["step"] == 1
    judgement = status["analyses"][-1]
    assert judgement["verdict"] == "Successful" and "errors: 0.5 (max 1)" in judgement["message"]
    assert judgement["queries"] == [{"name": "errors", "verdict": "Successful", "value": "0.5"}]


async def test_a_value_beyond_its_bound_fails_the_judgement() -> None:
    plan = await judged(RolloutPlanner(Source([0.2, 3.0])), rollout([QUERY]))
    status = plan.outcome.rollout
    assert status is not None and status["phase"] == "RolledBack", status
    assert status["reason"].startswith("errors: 3 above 1")
    assert status["analyses"][-1]["queries"] == [{"name": "errors", "verdict": "Failed", "value": "3"}]


@pytest.mark.parametrize(
    "source",
    [
        Source(error="Prometheus could not be reached: ClientConnectorError"),
        Source([]),
        Source([math.nan]),
        None,
    ],
)
async def test_no_number_holds_the_step_or_counts_as_a_failure(source: Source | None) -> None:
    held = await judged(RolloutPlanner(source), rollout([QUERY], onInconclusive="Hold"))
    status = held.outcome.rollout
    assert status is not None and status["phase"] == "Held" and status["failures"] == 0
    assert status["reason"].startswith("errors: no value (")
    assert status["analyses"][-1]["queries"] == [{"name": "errors", "verdict": "Inconclusive"}]
    rolled_back = await judged(RolloutPlanner(source), rollout([QUERY], onInconclusive="Rollback"))
    assert rolled_back.outcome.rollout is not None and rolled_back.outcome.rollout["phase"] == "RolledBack"


def test_queries_without_a_prometheus_make_the_plugin_invalid_naming_the_setting() -> None:
    spec = {"service": "handlers", "code": "x = 1", "rollout": rollout([QUERY])}
    (problem,) = check_spec("sender", "sender", spec).problems
    assert "spec.rollout.analysis.queries: the operator has no Prometheus" in str(problem)
    assert "operator.prometheus.url" in str(problem) and "--prometheus-url" in str(problem)
    assert check_spec("sender", "sender", spec, prometheus=True).problems == []
    (outcome,) = decide(
        [plugin(rollout([QUERY]))], {"sender": CheckedCode(CANARY_CODE)}, {"sender": in_service()}
    )
    assert outcome.phase == "Invalid" and "no Prometheus" in outcome.message

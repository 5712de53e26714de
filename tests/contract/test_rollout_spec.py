"""spec.rollout as users write it, and what the shape alone cannot refuse."""

from __future__ import annotations

from typing import Any

import pytest

from luna_contract.rollout import Placeholder, RolloutError, duration_seconds, query_parts, read_rollout

EXAMPLE: dict[str, Any] = {
    "steps": [{"percent": 25, "pause": "30s"}, {"percent": 100}],
    "analysis": {
        "interval": "10s",
        "initialDelay": "0s",
        "failureLimit": 2,
        "maxFailureRatio": 0.05,
        "onInconclusive": "Hold",
    },
    "autoRollback": True,
}


def test_the_documented_example_reads_as_written() -> None:
    rollout = read_rollout(EXAMPLE)
    assert [(s.percent, s.pause_seconds, s.manual) for s in rollout.steps] == [
        (25, 30.0, False),
        (100, 0.0, False),
    ]
    assert rollout.interval_seconds == 10.0 and rollout.initial_delay_seconds == 0.0
    assert rollout.analysis.failure_limit == 2 and rollout.analysis.on_inconclusive == "Hold"
    assert rollout.auto_rollback is True
    manual = read_rollout({"steps": [{"percent": 10, "pause": "manual"}, {"percent": 100}]})
    assert manual.steps[0].manual and manual.analysis.interval == "10s"  # defaults


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"percent": 50}, {"percent": 50}, {"percent": 100}], "must rise"),
        ([{"percent": 50}, {"percent": 25}, {"percent": 100}], "must rise"),
        ([{"percent": 25}, {"percent": 50}], "last step must be 100"),
        ([{"percent": 0}, {"percent": 100}], "spec.rollout"),
        ([{"percent": 101}], "spec.rollout"),
        ([], "spec.rollout"),
        ([{"percent": 25, "pause": "soon"}, {"percent": 100}], "spec.rollout"),
        ([{"percent": 25, "pause": "manual "}, {"percent": 100}], "spec.rollout"),
        ([{"percent": 25, "pause": "200h"}, {"percent": 100}], "steps[0].pause"),
        ([{"percent": "25"}, {"percent": 100}], "spec.rollout"),
    ],
)
def test_steps_that_cannot_be_rolled_out_are_refused_naming_the_field(steps: Any, expected: str) -> None:
    with pytest.raises(RolloutError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        read_rollout({"steps": steps})


@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        ({"interval": "0s"}, "interval: at least 1s"),
        ({"interval": "500ms"}, "interval: at least 1s"),
        ({"interval": "10"}, "spec.rollout"),
        ({"initialDelay": "-1s"}, "spec.rollout"),
        ({"failureLimit": 0}, "spec.rollout"),
        ({"maxFailureRatio": 1.5}, "spec.rollout"),
        ({"onInconclusive": "Ignore"}, "spec.rollout"),
        ({"queries": [{"name": "q", "query": "up"}]}, r"queries\[0\]: a query needs maxValue, minValue"),
        ({"queries": [{"name": "Q", "query": "up", "maxValue": 1}]}, "spec.rollout"),
        ({"queries": [{"name": "q", "query": "", "maxValue": 1}]}, "spec.rollout"),
        ({"queries": [{"name": "q", "query": "x" * 2001, "maxValue": 1}]}, "spec.rollout"),
        ({"queries": [{"name": "q", "query": "up", "maxValue": "1"}]}, "spec.rollout"),
        ({"queries": [{"name": "q", "query": "up", "maxValue": 1}] * 2}, "'q' names two queries"),
        ({"queries": [{"name": f"q{i}", "query": "up", "maxValue": 1} for i in range(11)]}, "spec.rollout"),
        (
            {"queries": [{"name": "q", "query": "up{pod=~$canaryPod}", "maxValue": 1}]},
            r"queries\[0\].query: \$canaryPod is not a placeholder",
        ),
        (
            {"queries": [{"name": "q", "query": "up{pod=~`$canaryPods`}", "maxValue": 1}]},
            "raw `string`",
        ),
    ],
)
def test_analyses_that_cannot_judge_are_refused(analysis: dict[str, Any], expected: str) -> None:
    with pytest.raises(RolloutError, match=expected):
        read_rollout({"steps": [{"percent": 100}], "analysis": analysis})


def test_durations() -> None:
    assert duration_seconds("1h30m") == 5400.0
    assert duration_seconds("250ms") == 0.25
    for bad in ("", "1d", "1.s", "s", "1h 30m", "169h"):
        with pytest.raises(RolloutError):
            duration_seconds(bad)


def test_queries_read_as_written() -> None:
    rollout = read_rollout(
        {
            "steps": [{"percent": 100}],
            "analysis": {
                "queries": [
                    {"name": "errors", "query": "sum(x{pod=~$canaryPods})", "maxValue": 0.5},
                    {"name": "throughput", "query": "sum(rate(y[$window]))", "minValue": 1, "maxValue": 1e9},
                ]
            },
        }
    )
    errors, throughput = rollout.analysis.queries
    assert (errors.name, errors.max_value, errors.min_value) == ("errors", 0.5, None)
    assert (throughput.min_value, throughput.max_value) == (1.0, 1e9)
    assert read_rollout({"steps": [{"percent": 100}]}).analysis.queries == []


def test_a_querys_placeholders_are_found_with_the_string_they_stand_in() -> None:
    query = "sum(x{pod=~$canaryPods, ns=\"$namespace-a\", q='\\'$plugin'})[$window] $$ # $nothing"
    parts = query_parts(query)
    assert parts == [
        "sum(x{pod=~",
        Placeholder("canaryPods"),
        ', ns="',
        Placeholder("namespace", '"'),
        "-a\", q='\\'",
        Placeholder("plugin", "'"),
        "'})[",
        Placeholder("window"),
        "] $ # $nothing",
    ]
    # a $ that starts no name is text (a regular expression's end, say)
    assert query_parts('x{a=~"b$"}') == ['x{a=~"b$"}']

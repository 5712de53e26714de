"""The planner's pure parts: status.rollout read back as written, commands acted on once, the
pods' figures taken from the reports (hostile values included)."""

from __future__ import annotations

from typing import Any

import pytest

from luna_contract.rollout import read_rollout
from luna_operator.reports import (
    Figures,
    PodPlugin,
    ReportedPlugins,
    ReportGroup,
    ReportSnapshot,
    parse_report,
)
from luna_operator.rollout.decision import CANARY_REPORT_GRACE, Analysis, RolloutState, awaiting_canary
from luna_operator.rollout.planner import (
    RolloutPlanner,
    from_status,
    read_command,
    samples,
    to_status,
    window_start,
)
from tests.operator.rollout import planning

V1, V2 = "1" * 64, "2" * 64


def test_the_status_reads_back_as_the_state_it_was_written_from() -> None:
    spec = read_rollout({"steps": [{"percent": 25}, {"percent": 100}]})
    state = RolloutState(
        "Held",
        V2,
        V1,
        step=1,
        step_started=1_800_000_000.25,
        failures=1,
        passes_in_step=2,
        last_judged=1_800_000_010.5,
        held_by_failures=True,
        reason="no traffic",
        analyses=(Analysis(1_800_000_010.5, 1, "Inconclusive", "no traffic"),),
        pods=("p-1", "p-2"),
        handled_command="promote/7",
    )
    status = to_status(state, spec)
    assert status["percent"] == 100 and status["canaryPodCount"] == 2
    assert from_status(status) == state


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "Promoted",
        [],
        {"phase": "Exploded", "canaryHash": V2},
        {"phase": "Promoted"},
        {"canaryHash": V2},
    ],
)
def test_a_status_that_is_not_a_rollout_is_none(stored: Any) -> None:
    assert from_status(stored) is None


def test_odd_values_in_a_stored_status_do_not_raise() -> None:
    found = from_status(
        {"phase": "Progressing", "canaryHash": V2, "stepStartedAt": "yesterday", "canaryPods": "p"}
    )
    assert found is not None and found.step_started == 0.0 and found.pods == ()


def test_a_command_is_acted_on_once_per_value() -> None:
    assert read_command(None, None) == (None, None)
    assert read_command("promote/1", None) == ("promote", "promote/1")
    assert read_command("promote/1", "promote/1") == (None, "promote/1")
    assert read_command("Abort", "promote/1") == ("abort", "Abort")
    assert read_command("retry/x/y", None) == ("retry", "retry/x/y")
    # not a command: remembered, never acted on
    assert read_command("delete-everything", None) == (None, "delete-everything")


def group(pods: list[str], **plugins: PodPlugin) -> ReportGroup:
    return ReportGroup(ReportedPlugins(dict(plugins)), pods)


def test_samples_come_from_the_pods_figures_and_a_failed_canary_counts_as_its_pod() -> None:
    figures = Figures(10, 1, 5, 0, 0, 0.0)
    snapshot = ReportSnapshot(
        [
            group(["p-1"], hello=PodPlugin("running", V2, figures=figures)),
            group(["p-2", "p-3"], hello=PodPlugin("running", V1, figures=Figures(20, 0, 0, 0, 0, 0.0))),
            group(["p-4"], hello=PodPlugin("running", V1, failed_code_hash=V2, error="boom")),
            group(["p-5"], hello=PodPlugin("running", V1)),  # not following the rollout list yet
            group(["p-6"], other=PodPlugin("running", V1, figures=figures)),
        ],
        6,
    )
    found = samples(snapshot, "hello", V2)
    assert sorted(found) == ["p-1", "p-2", "p-3", "p-4"]
    assert (found["p-1"].code_hash, found["p-1"].callbacks, found["p-1"].failed_callbacks) == (V2, 10, 1)
    assert found["p-2"].code_hash == V1 and found["p-3"].callbacks == 20
    assert found["p-4"].code_hash == V2 and found["p-4"].load_failed


def test_figures_in_a_report_are_read_bounded_and_hostile_ones_count_as_zero() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
        "spec": {
            "service": "handlers",
            "pod": "p-1",
            "heartbeatTime": "2026-12-07T00:00:00.000000Z",
            "plugins": [
                {
                    "module": "hello",
                    "state": "running",
                    "codeHash": V2,
                    "callbacks": 10**30,
                    "failedCallbacks": -5,
                    "routeAnswers": "many",
                    "routeErrors": True,
                    "dropped": float("nan"),
                    "loopBlockedSeconds": 1.5,
                }
            ],
        },
    }
    report = parse_report(body, received=1_900_000_000.0)
    assert report is not None
    entry = report.plugins.get("hello")
    assert entry is not None and entry.figures == Figures(2**53, 0, 0, 0, 0, 1.5)


def test_dead_letters_come_from_the_delivery_and_every_reporting_pod_has_a_baseline() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "ns", "uid": "u"},
        "spec": {
            "service": "handlers",
            "pod": "p-1",
            "heartbeatTime": "2026-12-07T00:00:00.000000Z",
            "plugins": [
                {
                    "module": "hello",
                    "state": "running",
                    "codeHash": V2,
                    "callbacks": 3,
                    "delivery": {"deadLetters": 7},
                },
                {"module": "odd", "state": "running", "codeHash": V2, "delivery": {"deadLetters": "x"}},
                {"module": "odder", "state": "running", "codeHash": V2, "delivery": [1]},
            ],
        },
    }
    report = parse_report(body, received=1_900_000_000.0)
    assert report is not None
    assert [report.plugins.get(m).dead_letters for m in ("hello", "odd", "odder")] == [7, 0, 0]  # type: ignore[union-attr]
    snapshot = ReportSnapshot(
        [
            group(
                ["p-1"], hello=PodPlugin("running", V2, figures=Figures(1, 0, 0, 0, 0, 0.0), dead_letters=4)
            ),
            group(["p-2"], hello=PodPlugin("running", V1, dead_letters=9)),  # no figures yet
        ],
        2,
    )
    assert samples(snapshot, "hello", V2)["p-1"].dead_letters == 4
    start = window_start(snapshot, "hello", V2)
    assert (start["p-1"].callbacks, start["p-1"].dead_letters) == (1, 4)
    assert (start["p-2"].code_hash, start["p-2"].callbacks, start["p-2"].dead_letters) == (V1, 0, 9)


async def test_judgements_wait_for_a_pod_to_report_the_canary_then_judge_it() -> None:
    """With no initial delay and onInconclusive: Rollback, the judgements due before any pod
    runs the canary are put off (they used to count as failures: a rollback at once)."""
    spec = planning.rollout([], initialDelay="0s", onInconclusive="Rollback")
    outcome = planning.ready_outcome(spec)
    planner = RolloutPlanner(None)
    start = 1000.0
    first = await planner.plan(outcome, planning.in_service(), planning.snapshot(), start)
    assert first.outcome.active is not None and first.outcome.active.canary is not None
    pods = tuple(first.outcome.active.canary.pods)
    for later in (0.5, 11.0, 40.0):  # the sidecars have not loaded it yet
        waiting = await planner.plan(outcome, planning.in_service(), planning.snapshot(), start + later)
        status = waiting.outcome.rollout
        assert status is not None and (status["phase"], status.get("analyses", [])) == ("Progressing", [])
    judged = await planner.plan(outcome, planning.in_service(), planning.snapshot(pods), start + 45.0)
    status = judged.outcome.rollout
    assert status is not None and status["phase"] == "Progressing" and status["step"] == 1, status
    assert [analysis["verdict"] for analysis in status["analyses"]] == ["Successful"]


async def test_a_canary_no_pod_ever_reports_is_inconclusive_once_the_grace_is_over() -> None:
    spec = planning.rollout([], initialDelay="0s", onInconclusive="Rollback")
    outcome = planning.ready_outcome(spec)
    planner = RolloutPlanner(None)
    await planner.plan(outcome, planning.in_service(), planning.snapshot(), 1000.0)
    late = await planner.plan(
        outcome, planning.in_service(), planning.snapshot(), 1000.0 + CANARY_REPORT_GRACE
    )
    status = late.outcome.rollout
    assert status is not None and status["phase"] == "RolledBack", status
    assert "no pod reports running the canary" in status["reason"]


def test_awaiting_the_canary_lasts_the_grace_or_one_interval_if_longer() -> None:
    spec = read_rollout({"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"interval": "5m"}})
    state = RolloutState("Progressing", V2, V1, step_started=100.0)
    assert awaiting_canary(spec, state, 100.0 + 299, canary_reported=False)
    assert not awaiting_canary(spec, state, 100.0 + 300, canary_reported=False)
    assert not awaiting_canary(spec, state, 100.0 + 1, canary_reported=True)
    short = read_rollout({"steps": [{"percent": 100}], "analysis": {"interval": "10s"}})
    assert awaiting_canary(short, state, 100.0 + CANARY_REPORT_GRACE - 1, canary_reported=False)
    assert not awaiting_canary(short, state, 100.0 + CANARY_REPORT_GRACE, canary_reported=False)

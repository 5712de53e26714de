"""Where a rollout goes: steps, pauses, failures and a user's commands, from hand-made histories,
and whole rollouts simulated second by second over four pods."""

from __future__ import annotations

from typing import Any

from luna_contract.rollout import read_rollout
from luna_operator.rollout import (
    Judgement,
    PodSample,
    RolloutState,
    advance,
    begin,
    choose_canary_pods,
    judge,
    judgement_due,
)

GOOD, BAD, INCONCLUSIVE = (
    Judgement("Successful", "0.0% failed"),
    Judgement("Failed", "100.0% failed"),
    Judgement("Inconclusive", "no traffic"),
)


def spec(**changes: Any) -> Any:
    raw: dict[str, Any] = {
        "steps": [{"percent": 25, "pause": "30s"}, {"percent": 50, "pause": "30s"}, {"percent": 100}],
        "analysis": {"interval": "10s", "failureLimit": 2},
    }
    raw.update(changes)
    return read_rollout(raw)


def test_the_first_version_is_promoted_and_a_new_one_starts_at_step_zero() -> None:
    first = begin("v1", None, now=0)
    assert (first.phase, first.running_version, first.active) == ("Promoted", "v1", False)
    assert begin("v1", first, now=5) is first
    rollout = begin("v2", first, now=10)
    assert (rollout.phase, rollout.step, rollout.canary_hash, rollout.stable_hash) == (
        "Progressing",
        0,
        "v2",
        "v1",
    )
    assert rollout.step_started == 10 and rollout.running_version == "v1"
    # v3 while v2 is still a canary: v3 is rolled out against v1, the version in service
    third = begin("v3", rollout, now=20)
    assert (third.canary_hash, third.stable_hash, third.step) == ("v3", "v1", 0)
    # back to v1 while v2 rolls out: nothing to roll out
    assert begin("v1", rollout, now=30).phase == "Promoted"


def test_a_healthy_canary_moves_once_judged_and_paused_then_is_promoted() -> None:
    s = spec()
    state = begin("v2", begin("v1", None, 0), now=0)
    assert judgement_due(s, state, 0)
    state = advance(s, state, 0, GOOD)
    assert (state.phase, state.step, state.passes_in_step) == ("Progressing", 0, 1)  # paused 30 s
    assert not judgement_due(s, state, 9) and judgement_due(s, state, 10)
    state = advance(s, state, 29)
    assert state.step == 0
    state = advance(s, state, 30)
    assert (state.phase, state.step, state.step_started) == ("Progressing", 1, 30)
    state = advance(s, state, 31)
    assert state.step == 1  # judged again in the new step before it moves
    state = advance(s, advance(s, state, 40, GOOD), 60)
    assert state.step == 2
    state = advance(s, state, 61, GOOD)  # the last step needs no pause
    assert (state.phase, state.running_version) == ("Promoted", "v2")
    assert [a.step for a in state.analyses] == [0, 1, 2]


def test_a_failing_canary_is_rolled_back_after_the_failure_limit() -> None:
    s = spec()
    state = begin("v2", begin("v1", None, 0), now=0)
    state = advance(s, state, 0, BAD)
    assert (state.phase, state.failures) == ("Progressing", 1)
    state = advance(s, state, 10, BAD)
    assert (state.phase, state.failures, state.running_version) == ("RolledBack", 2, "v1")
    assert state.reason == "100.0% failed"
    # the same code is not rolled out again; a user's retry or new code is
    assert begin("v2", state, now=20) is state
    assert advance(s, state, 20, GOOD) is state
    retried = advance(s, state, 20, command="retry")
    assert (retried.phase, retried.step, retried.failures, retried.stable_hash) == ("Progressing", 0, 0, "v1")
    assert begin("v3", state, now=30).phase == "Progressing"


def test_inconclusive_holds_or_rolls_back_as_asked() -> None:
    s = spec()
    state = advance(s, begin("v2", begin("v1", None, 0), now=0), 0, INCONCLUSIVE)
    assert state.phase == "Held" and state.failures == 0
    assert advance(s, state, 100).phase == "Held"  # time alone does not move a held rollout
    state = advance(s, state, 10, GOOD)
    assert state.phase == "Progressing" and state.passes_in_step == 1
    strict = spec(analysis={"interval": "10s", "failureLimit": 1, "onInconclusive": "Rollback"})
    assert advance(strict, begin("v2", begin("v1", None, 0), now=0), 0, INCONCLUSIVE).phase == "RolledBack"


def test_without_auto_rollback_a_failing_canary_waits_for_a_user() -> None:
    s = spec(autoRollback=False)
    state = begin("v2", begin("v1", None, 0), now=0)
    state = advance(s, advance(s, state, 0, BAD), 10, BAD)
    assert (state.phase, state.held_by_failures) == ("Held", True)
    assert not judgement_due(s, state, 100)
    assert advance(s, state, 100, GOOD).phase == "Held"
    assert advance(s, state, 100, command="abort").phase == "RolledBack"
    promoted = advance(s, state, 100, command="promote")
    assert (promoted.phase, promoted.step, promoted.held_by_failures) == ("Progressing", 1, False)


def test_a_manual_step_pauses_until_promote() -> None:
    s = spec(steps=[{"percent": 50, "pause": "manual"}, {"percent": 100}])
    state = advance(s, begin("v2", begin("v1", None, 0), now=0), 0, GOOD)
    assert state.phase == "Paused"
    assert advance(s, state, 10_000).phase == "Paused" and not judgement_due(s, state, 10_000)
    assert advance(s, state, 50, command="retry") is state  # not a command for this phase
    state = advance(s, state, 50, command="promote")
    assert (state.phase, state.step) == ("Progressing", 1)
    assert advance(s, state, 51, GOOD).phase == "Promoted"
    assert advance(s, advance(s, state, 51, GOOD), 52, command="abort").phase == "Promoted"


def simulate(canary_fails: bool, pods: int = 4, seconds: int = 400) -> tuple[RolloutState, int, float | None]:
    """A rollout of v2 over ``pods`` pods, one second at a time: every pod handles 10 callbacks a
    second, all failing on v2 when ``canary_fails``. Returns the end state, the most pods that ran
    v2 at once, and the seconds from v2's first failure to its rollback (None if never)."""
    s = spec()
    names = [f"handlers-{i}" for i in range(pods)]
    state = begin("v2", begin("v1", None, 0), now=0)
    counters = {name: [0, 0] for name in names}  # callbacks, failed, of the version each runs
    running = dict.fromkeys(names, "v1")
    canary: list[str] = []
    snapshot: dict[str, PodSample] = {}
    most, first_failure, rolled_back = 0, None, None
    for now in range(seconds):
        canary = (
            choose_canary_pods("uid/v2", names, s.steps[state.step].percent, canary) if state.active else []
        )
        for name in names:
            version = "v2" if name in canary or state.phase == "Promoted" else "v1"
            if version != running[name]:
                running[name], counters[name] = version, [0, 0]
            counters[name][0] += 10
            if version == "v2" and canary_fails:
                counters[name][1] += 10
                first_failure = now if first_failure is None else first_failure
        most = max(most, sum(v == "v2" for v in running.values()))
        samples = {
            n: PodSample(n, running[n], callbacks=c[0], failed_callbacks=c[1]) for n, c in counters.items()
        }
        judgement = None
        if judgement_due(s, state, now):
            judgement = judge(
                snapshot, samples, "v2", max_failure_ratio=0.05, window_seconds=s.interval_seconds
            )
            snapshot = samples
        state = advance(s, state, now, judgement)
        if state.phase == "RolledBack" and rolled_back is None:
            rolled_back = now
            break
        if state.phase == "Promoted":
            break
    return state, most, None if rolled_back is None or first_failure is None else rolled_back - first_failure


def test_a_good_version_goes_25_50_100_percent() -> None:
    state, most, _ = simulate(canary_fails=False)
    assert state.phase == "Promoted" and most == 4
    assert [a.verdict for a in state.analyses][-3:] == ["Successful"] * 3


def test_a_bad_version_never_runs_beyond_its_first_step_and_rolls_back_within_the_limit() -> None:
    state, most, seconds = simulate(canary_fails=True)
    assert state.phase == "RolledBack" and state.running_version == "v1"
    assert most == 1  # 25 % of 4 pods
    spec_ = spec()
    assert seconds is not None and seconds <= spec_.analysis.failure_limit * spec_.interval_seconds
    # with 10 pods, the first step's share holds too
    state, most, _ = simulate(canary_fails=True, pods=10)
    assert state.phase == "RolledBack" and most == 2

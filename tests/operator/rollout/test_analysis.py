"""One judgement of the canary from hand-made report histories."""

from __future__ import annotations

from luna_operator.rollout import PodSample, judge

CANARY, STABLE = "v2", "v1"


def sample(pod: str, version: str = CANARY, **counters: float | bool) -> PodSample:
    return PodSample(pod, version, **counters)  # type: ignore[arg-type]


def judge_window(before: list[PodSample], now: list[PodSample], ratio: float = 0.05, window: float = 10.0):  # type: ignore[no-untyped-def]
    return judge(
        {s.pod: s for s in before},
        {s.pod: s for s in now},
        CANARY,
        max_failure_ratio=ratio,
        window_seconds=window,
    )


def test_the_worst_canary_pod_is_judged_not_the_average() -> None:
    before = [sample("c1"), sample("c2"), sample("c3"), sample("s1", STABLE)]
    now = [
        sample("c1", callbacks=1000),
        sample("c2", callbacks=1000),
        sample("c3", callbacks=100, failed_callbacks=20),  # 20 % on one pod, 1 % on average
        sample("s1", STABLE, callbacks=1000, failed_callbacks=1),
    ]
    result = judge_window(before, now)
    assert result.verdict == "Failed" and result.worst_pod == "c3"
    assert result.worst_ratio == 0.2 and result.stable_ratio == 0.001
    assert "20.0% failed on pod c3 against 0.1% on stable pods" in result.message


def test_route_5xx_and_dropped_batches_count_as_failures() -> None:
    now = [
        sample("c1", route_answers=90, route_errors=9, dropped=10),
        sample("s1", STABLE, route_answers=100),
    ]
    result = judge_window([], now)
    assert result.verdict == "Failed" and result.worst_ratio == 19 / 100


def test_a_sink_down_for_every_pod_is_not_the_canarys_fault() -> None:
    now = [
        sample("c1", callbacks=100, failed_callbacks=100),
        sample("s1", STABLE, callbacks=100, failed_callbacks=100),
    ]
    assert judge_window([], now).verdict == "Successful"
    # but a canary clearly worse than a failing stable is
    now = [
        sample("c1", callbacks=100, failed_callbacks=60),
        sample("s1", STABLE, callbacks=100, failed_callbacks=10),
    ]
    assert judge_window([], now).verdict == "Failed"


def test_only_the_window_counts_and_a_restart_resets_the_counters() -> None:
    before = [sample("c1", callbacks=1000, failed_callbacks=500)]  # old failures, before the window
    assert judge_window(before, [sample("c1", callbacks=2000, failed_callbacks=500)]).verdict == "Successful"
    # counters went down: the sidecar restarted, the end values are the window's
    result = judge_window(before, [sample("c1", callbacks=10, failed_callbacks=5)])
    assert result.verdict == "Failed" and result.worst_ratio == 0.5
    # a pod that was on the stable version at the window's start counts from zero on the canary
    result = judge_window(
        [sample("c1", STABLE, callbacks=5000)], [sample("c1", callbacks=100, failed_callbacks=1)]
    )
    assert result.verdict == "Successful" and result.worst_ratio == 0.01


def test_load_failures_and_a_blocked_loop_fail_at_once() -> None:
    assert judge_window([], [sample("c1", load_failed=True), sample("c2", callbacks=5)]).verdict == "Failed"
    blocked = judge_window([sample("c1")], [sample("c1", callbacks=100, loop_blocked_seconds=6.0)])
    assert blocked.verdict == "Failed" and "blocked the event loop of pod c1" in blocked.message
    assert (
        judge_window([sample("c1")], [sample("c1", callbacks=100, loop_blocked_seconds=4.0)]).verdict
        == "Successful"
    )


def test_no_data_is_inconclusive_never_a_success() -> None:
    assert judge_window([], []).verdict == "Inconclusive"
    assert judge_window([], [sample("s1", STABLE, callbacks=100)]).verdict == "Inconclusive"
    idle = judge_window([sample("c1", callbacks=7)], [sample("c1", callbacks=7)])
    assert idle.verdict == "Inconclusive" and "no callbacks or route answers" in idle.message


def test_a_strict_limit_of_zero_fails_on_any_failure_the_stable_pods_do_not_have() -> None:
    now = [sample("c1", callbacks=10_000, failed_callbacks=1), sample("s1", STABLE, callbacks=10_000)]
    assert judge_window([], now, ratio=0.0).verdict == "Failed"
    assert judge_window([], [sample("c1", callbacks=10_000)], ratio=0.0).verdict == "Successful"


def test_new_dead_letters_on_a_canary_pod_count_as_failures() -> None:
    # dead letters are a level: those held before the window (of the stable version too) are not new
    before = [sample("c1", STABLE, dead_letters=40), sample("s1", STABLE, dead_letters=3)]
    now = [
        sample("c1", callbacks=90, dead_letters=50),
        sample("s1", STABLE, callbacks=100, dead_letters=3),
    ]
    result = judge_window(before, now)
    assert result.verdict == "Failed" and result.worst_ratio == 10 / 100
    assert result.stable_ratio == 0.0


def test_dead_letters_without_a_baseline_or_going_down_are_not_new() -> None:
    # no earlier sample of the pod (after an operator restart): the level is the baseline
    assert judge_window([], [sample("c1", callbacks=100, dead_letters=500)]).verdict == "Successful"
    # replayed or purged by a user: fewer held, nothing new
    before = [sample("c1", callbacks=10, dead_letters=9)]
    now = [sample("c1", callbacks=110, dead_letters=2)]
    assert judge_window(before, now).verdict == "Successful"

"""Which pods run the canary: exact shares of the reporting pods, stable from step to step."""

from __future__ import annotations

import random

from luna_operator.rollout import choose_canary_pods, target_count

SEED = "uid-1/hash-2"


def test_target_count_is_the_share_rounded_down_but_at_least_one_pod() -> None:
    assert [target_count(25, n) for n in (0, 1, 2, 4, 8, 10)] == [0, 1, 1, 1, 2, 2]
    assert [target_count(50, n) for n in (1, 3, 4, 7)] == [1, 1, 2, 3]
    assert [target_count(100, n) for n in (1, 4, 9)] == [1, 4, 9]
    assert target_count(10, 4) == 1  # more than 10 %: a canary runs somewhere or is never judged


def test_the_choice_is_exact_and_each_step_keeps_the_pods_of_the_one_before() -> None:
    pods = [f"handlers-{i}" for i in range(20)]
    previous: list[str] = []
    for percent in (10, 25, 50, 100):
        chosen = choose_canary_pods(SEED, pods, percent, previous)
        assert len(chosen) == target_count(percent, 20)
        assert set(previous) <= set(chosen)
        previous = chosen
    assert previous == sorted(pods)


def test_the_choice_does_not_depend_on_order_or_the_replica_that_makes_it() -> None:
    pods = [f"p{i}" for i in range(12)]
    shuffled = pods[:]
    random.Random(7).shuffle(shuffled)
    assert choose_canary_pods(SEED, pods, 25) == choose_canary_pods(SEED, shuffled, 25)
    # another rollout (another canary hash) spreads over other pods
    others = {tuple(choose_canary_pods(f"uid-1/hash-{k}", pods, 25)) for k in range(10)}
    assert len(others) > 1


def test_new_pods_and_pods_that_went_away() -> None:
    pods = [f"p{i}" for i in range(8)]
    current = choose_canary_pods(SEED, pods, 25)
    assert len(current) == 2
    # a new pod: the canary pods keep it, the newcomer joins only if the count grows
    grown = choose_canary_pods(SEED, [*pods, "p8"], 25, current)
    assert grown == current
    more = choose_canary_pods(SEED, [*pods, "p8", "p9", "p10", "p11"], 25, current)
    assert set(current) < set(more) and len(more) == 3
    # a canary pod went away: another takes its place, the one left keeps the canary
    gone = current[0]
    after = choose_canary_pods(SEED, [p for p in pods if p != gone], 25, current)
    assert gone not in after and current[1] in after and len(after) == 1
    # pods went away and the set is above its count: the lowest-ranked returns to stable
    few = choose_canary_pods(SEED, pods[:4], 50, current)
    assert len(few) == 2
    shrunk = choose_canary_pods(SEED, pods[:4], 25, few)
    assert len(shrunk) == 1 and set(shrunk) <= set(few)
    # canary pods named that do not report are not counted
    assert choose_canary_pods(SEED, pods, 25, ["not-a-pod", "other"]) == choose_canary_pods(SEED, pods, 25)
    assert choose_canary_pods(SEED, [], 50, current) == []

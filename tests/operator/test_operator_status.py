"""``status.loaded`` and ``status.pods`` from the sidecars' reports, whatever shape they have."""

from __future__ import annotations

from typing import Any

from luna_contract.code import code_hash
from luna_operator.desired import CheckedCode, PluginOutcome, decide
from luna_operator.records import PluginRecord
from luna_operator.reports import MAX_ERROR_CHARS, ReportBook
from luna_operator.status import MAX_PODS, desired_status, pods_of_plugin
from tests.support.reports_kit import NOW, report

GOOD = "class P(BaseBackgroundPlugin):\n    pass\n"
CURRENT = code_hash(GOOD)
KEY = ("ns", "handlers")


def outcome() -> PluginOutcome:
    plugin = PluginRecord("ns", "p", "uid-p", 1, "t0", False, {"service": "handlers"})
    (decided,) = decide([plugin], {"p": CheckedCode(GOOD)}, {})
    return decided


def snapshot(*bodies: dict[str, Any]) -> Any:
    reports = ReportBook(ttl=30)
    for body in bodies:
        reports.put(body, now=NOW)
    return reports.snapshot(KEY, NOW)


def test_loaded_counts_pods_running_the_version_in_service() -> None:
    pods = pods_of_plugin(
        outcome(), snapshot(report("a", {"p": CURRENT}), report("b", {"p": "old"}), report("c", {}))
    )
    assert pods.loaded == "1/3" and pods.outdated == 2 and pods.failing == 0
    assert [(pod["pod"], pod["state"]) for pod in pods.pods] == [
        ("a", "running"),
        ("b", "running"),
        ("c", "absent"),
    ]


def test_reports_of_any_shape_never_break_the_status() -> None:
    odd = [report(p) for p in "abcd"]
    odd[0]["spec"]["plugins"] = "not a list"
    odd[1]["spec"]["plugins"] = ["not a dict", None, 3]
    odd[2]["spec"]["plugins"] = [{"module": "p", "state": "failed", "error": "e" * 100_000}]
    odd[3]["spec"]["plugins"] = None
    pods = pods_of_plugin(outcome(), snapshot(*odd))
    assert pods.loaded == "0/4" and pods.failing == 1
    (failed,) = [pod for pod in pods.pods if pod.get("error")]
    assert len(failed["error"]) <= MAX_ERROR_CHARS


def test_at_most_so_many_pods_are_listed_those_with_a_problem_first() -> None:
    bodies = [report(f"pod-{index:03d}", {"p": CURRENT}) for index in range(MAX_PODS + 10)]
    bodies.append(report("pod-zzz", {"p": "old"}))
    pods = pods_of_plugin(outcome(), snapshot(*bodies))
    assert pods.loaded == f"{MAX_PODS + 10}/{MAX_PODS + 11}" and len(pods.pods) == MAX_PODS
    names = [pod["pod"] for pod in pods.pods]
    assert "pod-zzz" in names and names == sorted(names)  # the outdated pod is listed, in name order


def test_a_version_in_service_that_pods_failed_to_load_is_named_with_what_they_keep() -> None:
    rolled_back = {
        "state": "running",
        "codeHash": "old",
        "failedCodeHash": CURRENT,
        "error": "ImportError: x",
    }
    pods = pods_of_plugin(
        outcome(),
        snapshot(
            report("b", {"p": rolled_back}), report("a", {"p": rolled_back}), report("c", {"p": CURRENT})
        ),
    )
    assert pods.failed is not None
    assert (pods.failed.pods, pods.failed.example_pod, pods.failed.kept) == (2, "a", "old")
    assert pods.failing == 2 and pods.outdated == 2
    never = {"state": "failed", "failedCodeHash": CURRENT, "error": "SyntaxError"}
    pods = pods_of_plugin(outcome(), snapshot(report("a", {"p": never})))
    assert pods.failed is not None and pods.failed.kept is None
    other = {"state": "running", "codeHash": CURRENT, "failedCodeHash": "another", "error": "x"}
    assert pods_of_plugin(outcome(), snapshot(report("a", {"p": other}))).failed is None


def test_a_ready_plugin_says_how_many_pods_report_an_error() -> None:
    failing = {"state": "running", "codeHash": "old", "failedCodeHash": CURRENT, "error": "boom"}
    decided = outcome()
    pods = pods_of_plugin(decided, snapshot(report("a", {"p": failing}), report("b", {"p": CURRENT})))
    status = desired_status(decided, pods, {})
    assert status["phase"] == "Ready" and status["message"] == "1 pod(s) report an error: a: boom"
    assert status["loaded"] == "1/2" and status["pods"][0]["failedCodeHash"] == CURRENT
    assert (status["podsReady"], status["podsTotal"], status["podsFailing"]) == (1, 2, 1)


def test_the_pod_counts_are_integers_matching_loaded() -> None:
    decided = outcome()
    for bodies, expected in (
        ((), (0, 0, 0)),
        ((report("a", {"p": CURRENT}), report("b", {"p": CURRENT})), (2, 2, 0)),
        ((report("a", {"p": CURRENT}), report("b", {"p": "old"}), report("c", {})), (1, 3, 0)),
        ((report("a", {"p": {"state": "failed", "error": "SyntaxError"}}),), (0, 1, 1)),
    ):
        status = desired_status(decided, pods_of_plugin(decided, snapshot(*bodies)), {})
        counts = (status["podsReady"], status["podsTotal"], status["podsFailing"])
        assert counts == expected and all(type(count) is int for count in counts)
        assert status["loaded"] == f"{counts[0]}/{counts[1]}"


def test_without_reports_loaded_and_pods_are_left_as_they_are() -> None:
    status = desired_status(outcome(), None, {"loaded": "3/3", "podsReady": 3, "podsTotal": 3})
    assert not {"loaded", "pods", "podsReady", "podsTotal", "podsFailing"} & set(status)


def test_the_transition_time_moves_only_when_the_condition_flips() -> None:
    decided = outcome()
    first = desired_status(decided, None, {})
    again = desired_status(decided, None, first)
    assert again["conditions"][0]["lastTransitionTime"] == first["conditions"][0]["lastTransitionTime"]
    shown = {"conditions": [{**first["conditions"][0], "lastTransitionTime": "2020-01-01T00:00:00Z"}]}
    assert (
        desired_status(decided, None, shown)["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    )

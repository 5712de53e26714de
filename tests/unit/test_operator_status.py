"""``status.loaded`` and ``status.pods`` from the sidecars' reports, whatever shape they have."""

from __future__ import annotations

from typing import Any

from luna_operator.desired import CheckedCode, decide
from luna_operator.status import MAX_POD_ERROR_CHARS, MAX_PODS, loaded_status
from luna_operator.store import PluginRecord
from luna_operator.validation import code_hash

GOOD = "class P(BaseBackgroundPlugin):\n    pass\n"


def outcome() -> Any:
    plugin = PluginRecord("ns", "p", "uid-p", 1, "t0", False, {"service": "handlers"})
    (decided,) = decide([plugin], {"p": CheckedCode(GOOD)}, {})
    return decided


def test_loaded_counts_pods_running_the_version_in_service() -> None:
    reports = [
        {"pod": "a", "plugins": [{"module": "p", "state": "running", "codeHash": code_hash(GOOD)}]},
        {"pod": "b", "plugins": [{"module": "p", "state": "running", "codeHash": "old"}]},
        {"pod": "c", "plugins": []},
    ]
    status = loaded_status(outcome(), reports)
    assert status["loaded"] == "1/3"
    assert [pod["state"] for pod in status["pods"]] == ["running", "running", "absent"]


def test_reports_of_any_shape_never_break_the_status() -> None:
    reports: list[dict[str, Any]] = [
        {"pod": "a", "plugins": "not a list"},
        {"pod": "b", "plugins": ["not a dict", None, 3]},
        {"pod": "c", "plugins": [{"module": "p", "state": "failed", "error": "e" * 100_000}]},
        {"plugins": None},
    ]
    status = loaded_status(outcome(), reports)
    assert status["loaded"] == "0/4"
    assert len(status["pods"][2]["error"]) <= MAX_POD_ERROR_CHARS


def test_at_most_so_many_pods_are_listed() -> None:
    reports = [{"pod": f"pod-{index}", "plugins": []} for index in range(MAX_PODS + 10)]
    status = loaded_status(outcome(), reports)
    assert status["loaded"] == f"0/{MAX_PODS + 10}" and len(status["pods"]) == MAX_PODS

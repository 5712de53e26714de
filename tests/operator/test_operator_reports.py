"""The report book: what each sidecar report changes for the operator, bounded, whatever its shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from luna_operator.reports import (
    MAX_ERROR_CHARS,
    MAX_REPORTED_PLUGINS,
    ReportBook,
    ReportChange,
    parse_report,
)
from tests.support.reports_kit import NOW, report

KEY = ("ns", "handlers")


def book() -> ReportBook:
    return ReportBook(ttl=30)


def test_a_new_report_changes_the_owners_and_counts_every_module() -> None:
    found = book().put(report("a", {"m": "h1"}), now=NOW)
    assert found == [ReportChange(KEY, owners=True, modules=None)]


def test_a_heartbeat_alone_changes_nothing() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1", "n": "h2"}), now=NOW)
    assert reports.put(report("a", {"m": "h1", "n": "h2"}, beat=NOW + 10), now=NOW + 10) == []


def test_a_changed_module_is_named() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1", "n": "h2"}), now=NOW)
    changes = reports.put(report("a", {"m": "h1", "n": "h3"}, beat=NOW + 1), now=NOW + 1)
    assert changes == [ReportChange(KEY, modules=frozenset({"n"}))]
    failed = {"state": "running", "codeHash": "h3", "failedCodeHash": "h4", "error": "boom"}
    changes = reports.put(report("a", {"m": "h1", "n": failed}, beat=NOW + 2), now=NOW + 2)
    assert changes == [ReportChange(KEY, modules=frozenset({"n"}))]


def test_a_deleted_report_changes_the_owners_and_the_counts() -> None:
    reports = book()
    body = report("a", {"m": "h1"})
    reports.put(body, now=NOW)
    assert reports.remove(body, now=NOW) == [ReportChange(KEY, owners=True, modules=None)]
    assert reports.services() == set() and len(reports) == 0


def test_a_report_stops_counting_after_the_ttl_and_counts_again_when_it_beats() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1"}), now=NOW)
    reports.put(report("b", {"m": "h1"}), now=NOW)
    assert reports.expire(NOW + 29) == []
    reports.put(report("b", {"m": "h1"}, beat=NOW + 20), now=NOW + 20)
    assert reports.expire(NOW + 31) == [ReportChange(KEY, modules=None)]  # a went quiet
    assert reports.snapshot(KEY, NOW + 31).pods == 1
    assert reports.expire(NOW + 32) == []  # said once
    changes = reports.put(report("a", {"m": "h1"}, beat=NOW + 40), now=NOW + 40)
    assert changes == [ReportChange(KEY, modules=None)]
    assert reports.ages(NOW + 40)[KEY] == (2, 0, 20.0)


def test_a_heartbeat_from_the_future_counts_from_when_it_arrived() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1"}, beat=NOW + 3600), now=NOW)
    assert reports.snapshot(KEY, NOW + 31).pods == 0


def test_alike_reports_share_their_content_and_form_one_group() -> None:
    reports = book()
    for index in range(100):
        reports.put(report(f"pod-{index:03d}", {"m": "h1", "n": "h2"}), now=NOW)
    reports.put(report("pod-new", {"m": "h1", "n": "h3"}), now=NOW)
    snapshot = reports.snapshot(KEY, NOW)
    assert snapshot.pods == 101 and len(snapshot.groups) == 2
    assert sorted(len(group.pods) for group in snapshot) == [1, 100]
    first, second = (parse_report(report(p, {"m": "h1", "n": "h2"}), received=NOW) for p in "xy")
    assert first is not None and second is not None and first.plugins is second.plugins


def test_a_list_drops_the_reports_deleted_meanwhile() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1"}), now=NOW)
    reports.put(report("b", {"m": "h1"}), now=NOW)
    reports.put(report("c", {"m": "h1"}, namespace="other"), now=NOW)
    changes = reports.replace("ns", [report("a", {"m": "h1"})], now=NOW)
    assert ReportChange(KEY, owners=True, modules=None) in changes
    assert [r.pod for r in reports.reports(KEY)] == ["a"]
    assert [r.pod for r in reports.reports(("other", "handlers"))] == ["c"]  # another namespace's list


def test_a_report_that_moves_to_another_service_leaves_the_first() -> None:
    reports = book()
    reports.put(report("a", {"m": "h1"}), now=NOW)
    moved = report("a", {"m": "h1"})
    moved["spec"]["service"] = "matcher"
    changes = reports.put(moved, now=NOW)
    assert {change.service for change in changes} == {KEY, ("ns", "matcher")}
    assert reports.reports(KEY) == [] and len(reports.reports(("ns", "matcher"))) == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body.update(spec="not an object"),
        lambda body: body["spec"].pop("service"),
        lambda body: body["spec"].update(service=["a list"]),
        lambda body: body.update(metadata=None),
    ],
)
def test_a_report_without_a_service_is_rejected_and_stops_counting(mangle: Any) -> None:
    reports = book()
    body = report("a", {"m": "h1"})
    reports.put(body, now=NOW)
    broken = copy.deepcopy(body)
    mangle(broken)
    reports.put(broken, now=NOW)
    assert reports.rejected == 1
    if isinstance(broken.get("metadata"), dict):
        assert reports.snapshot(KEY, NOW).pods == 0


def test_reports_of_any_shape_are_read_bounded() -> None:
    body = report("a")
    body["spec"]["heartbeatTime"] = "yesterday"
    body["spec"]["pod"] = 12
    body["spec"]["plugins"] = [
        "not an object",
        None,
        {"module": 3, "state": "running"},
        {"module": "m", "state": {"nested": True}, "codeHash": ["x"], "error": "e" * 100_000},
        {"module": "m", "state": "running", "codeHash": "second entry of a module is ignored"},
        *({"module": f"x{index}", "state": "running"} for index in range(MAX_REPORTED_PLUGINS + 10)),
    ]
    parsed = parse_report(body, received=NOW)
    assert parsed is not None
    assert parsed.heartbeat is None and parsed.pod == "a-handlers"  # no usable time or pod name
    entry = parsed.plugins.get("m")
    assert entry is not None and entry.state == "unknown" and entry.code_hash is None
    assert entry.error is not None and len(entry.error) == MAX_ERROR_CHARS
    assert len(parsed.plugins) < MAX_REPORTED_PLUGINS
    reports = book()
    reports.put(body, now=NOW)
    assert reports.snapshot(KEY, NOW).pods == 0  # no readable heartbeat: it never counts


def test_plugins_of_a_report_that_is_not_a_list_are_none() -> None:
    body = report("a")
    body["spec"]["plugins"] = {"m": "h1"}
    parsed = parse_report(body, received=NOW)
    assert parsed is not None and len(parsed.plugins) == 0

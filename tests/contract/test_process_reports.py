"""An isolated plugin's process in the per-pod report: nothing while it runs and never ended;
its state, restarts and last end once it has ended or while it is down; the operator reads such
an entry as the running version it is (or the quarantined one it is not)."""

from __future__ import annotations

from typing import Any

from luna_contract.reports import PluginReport, ProcessReport, active_revision, differences
from luna_operator.reports import PodPlugin, parse_report
from tests.support.reports_kit import pod_reporter

H1 = "1" * 64


def isolated(**process: Any) -> dict[str, Any]:
    described = {
        "state": "running",
        "pid": 42,
        "restarts": 0,
        "rssBytes": 1,
        "cpuSeconds": 0.1,
        "lastExit": None,
    }
    return {
        "name": "forwarder",
        "state": "running",
        "codeHash": H1,
        "classes": [],
        "process": described | process,
    }


def entries(plugins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = pod_reporter(plugins, {"forwarder": H1}).body()
    spec = body["spec"]
    assert isinstance(spec["plugins"], list)
    return spec["plugins"]


def test_a_process_that_never_ended_adds_nothing() -> None:
    assert entries([isolated()]) == []
    assert (
        entries([{"name": "forwarder", "state": "running", "codeHash": H1, "classes": [], "process": None}])
        == []
    )


def test_restarts_and_the_last_end_are_reported() -> None:
    (entry,) = entries([isolated(restarts=2, lastExit={"reason": "killed by SIGSEGV", "output": ["x"]})])
    assert entry["process"] == {"restarts": 2, "lastExit": "killed by SIGSEGV"}
    (entry,) = entries(
        [isolated(state="restarting", restarts=0, lastExit={"reason": "exit code 3", "output": []})]
    )
    assert entry["process"] == {"state": "restarting", "lastExit": "exit code 3"}


def test_the_operator_reads_a_restarted_plugin_as_the_running_version() -> None:
    restarted = isolated(restarts=1, lastExit={"reason": "memory: over", "output": []})
    body = pod_reporter([restarted], {"forwarder": H1}).body()
    stored = {**body, "metadata": {**body["metadata"], "namespace": "ns", "uid": "u"}}
    revision = active_revision({"forwarder": H1})
    report = parse_report(stored, received=2e9, revisions={("ns", "handlers"): {revision: {"forwarder": H1}}})
    assert report is not None and report.plugins.get("forwarder") == PodPlugin("running", H1)


def test_an_entry_with_process_figures_differs_from_the_named_version() -> None:
    quiet = PluginReport("forwarder", "running", code_hash=H1)
    restarted = PluginReport("forwarder", "running", code_hash=H1, process=ProcessReport(restarts=1))
    assert differences([quiet], {"forwarder": H1}) == []
    assert differences([restarted], {"forwarder": H1}) == [restarted]

"""The report a sidecar writes (:func:`luna_contract.reports.report_body`) is read back whole
by the operator's lenient reader, field by field."""

from __future__ import annotations

from luna_contract.active_list import ActiveEntry, decode_active_list, encode_active_list
from luna_contract.code import code_hash
from luna_contract.names import report_name
from luna_contract.reports import (
    WAITING,
    PluginReport,
    RuntimeReportSpec,
    active_revision,
    differences,
    report_body,
)
from luna_operator.reports import PodPlugin, parse_report

H1, H2, H3 = code_hash("one"), code_hash("two"), code_hash("three")


def spec(plugins: list[PluginReport], revision: str | None = None) -> RuntimeReportSpec:
    return RuntimeReportSpec(
        service="handlers",
        pod="handlers-7d9-abc",
        ready=True,
        heartbeat_time="2026-12-07T10:00:00.000000Z",
        problems=["packages: index unreachable"],
        revision=revision,
        plugins=plugins,
    )


def stored(body: dict[str, object]) -> dict[str, object]:
    """``body`` as the API server returns it: with a namespace and a uid."""
    metadata = dict(body["metadata"])  # type: ignore[call-overload]
    return {**body, "metadata": {**metadata, "namespace": "ns", "uid": "u-1"}}


def test_every_field_the_sidecar_writes_the_operator_reads() -> None:
    plugins = [
        PluginReport("alpha", "running", code_hash=H1),
        PluginReport("beta", "failed", code_hash=H2, failed_code_hash=H3, error="boom at line 3"),
        PluginReport("gamma", "loading", requirements="installing"),
    ]
    body = report_body(spec(plugins), pod_uid="pod-uid")
    assert body["metadata"]["name"] == report_name("handlers-7d9-abc", "handlers")
    assert body["metadata"]["ownerReferences"][0]["uid"] == "pod-uid"
    report = parse_report(stored(body), received=2e9)
    assert report is not None
    assert (report.service, report.pod, report.namespace) == ("handlers", "handlers-7d9-abc", "ns")
    assert report.heartbeat is not None and report.revision is None
    assert report.plugins.get("alpha") == PodPlugin("running", H1)
    assert report.plugins.get("beta") == PodPlugin("failed", H2, H3, "boom at line 3")
    assert report.plugins.get("gamma") == PodPlugin("loading")


def test_unset_fields_are_left_out_and_the_revision_always_written() -> None:
    body = report_body(spec([PluginReport("alpha", "running", code_hash=H1)]), pod_uid=None)
    assert body["spec"]["plugins"] == [{"module": "alpha", "state": "running", "codeHash": H1}]
    assert "revision" in body["spec"] and body["spec"]["revision"] is None
    assert "ownerReferences" not in body["metadata"]


def test_a_compact_report_expands_to_what_the_active_list_names() -> None:
    entries = [ActiveEntry("alpha", H1, "lunaplugin-alpha", "alpha"), ActiveEntry("beta", H2, "lunaplugin-b")]
    data = encode_active_list("handlers", entries)
    named = {entry.module: entry.code_hash for entry in decode_active_list("l", data, "handlers")}
    running = [
        PluginReport("alpha", "running", code_hash=H1),
        PluginReport("stray", "running", code_hash=H3),
    ]
    listed = differences(running, named)
    assert listed == [PluginReport("stray", "running", code_hash=H3), PluginReport("beta", WAITING)]
    revision = active_revision(named)
    body = stored(report_body(spec(listed, revision), pod_uid=None))
    report = parse_report(body, received=2e9, revisions={("ns", "handlers"): {revision: named}})
    assert report is not None
    assert report.plugins.get("alpha") == PodPlugin("running", H1)
    assert report.plugins.get("beta") == PodPlugin(WAITING)
    assert report.plugins.get("stray") == PodPlugin("running", H3)


def test_an_entry_that_says_more_than_running_the_named_version_is_listed() -> None:
    named = {"alpha": H1}
    for entry in (
        PluginReport("alpha", "running", code_hash=H1, loop_blocked_seconds=1.5),
        PluginReport("alpha", "running", code_hash=H1, requirements="failed"),
        PluginReport("alpha", "running", code_hash=H2),
        PluginReport("alpha", "running", code_hash=H1, failed_code_hash=H2),
        PluginReport("alpha", "failed", code_hash=H1, error="x"),
        PluginReport("alpha", "running"),
    ):
        assert differences([entry], named) == [entry], entry
    assert (
        differences([PluginReport("alpha", "running", code_hash=H1, requirements="installed")], named) == []
    )

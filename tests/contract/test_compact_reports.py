"""Reports that name the active list's revision and list only differences: what the sidecar
writes (its own ``RuntimeReporter``) reads back in the operator's report book exactly as the
full report would, and a revision the book does not know yet never counts a pod as loaded."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import msgspec
import pytest

from luna_contract.active_list import ActiveEntry
from luna_contract.reports import PluginReport, active_revision, differences
from luna_operator.render import active_list, active_list_code_hashes
from luna_operator.reports import MAX_REVISIONS, ReportBook, ReportChange
from luna_sidecar.kube.kube_report import RuntimeReporter
from luna_sidecar.kube.kube_source import MirroredConfigMap, desired_plugins
from tests.support.reports_kit import NOW, iso
from tests.support.reports_kit import pod_reporter as reporter

KEY = ("ns", "handlers")
H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64


def running(module: str, code_hash: str, **more: Any) -> dict[str, Any]:
    """A plugin as the runtime describes it (``GET /plugins``), running ``code_hash``."""
    return {"name": module, "state": "running", "codeHash": code_hash, **more}


class StoredReports:
    """The few calls the reporter makes, answered like an API server whose CRD keeps (or,
    with ``prunes``, drops) ``spec.revision``."""

    def __init__(self, *, prunes: bool = False) -> None:
        self.prunes = prunes
        self.written: list[dict[str, Any]] = []

    async def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        spec = {k: v for k, v in args[5]["spec"].items() if v is not None}
        if self.prunes:
            spec.pop("revision", None)
        self.written.append(spec)
        return {"spec": spec}


def stored(body: dict[str, Any], uid: str = "uid-report") -> dict[str, Any]:
    """``body`` as the API server returns it (namespace and uid set)."""
    found = copy.deepcopy(body)
    found["metadata"] = {**found["metadata"], "namespace": "ns", "uid": uid}
    found["spec"] = {k: v for k, v in found["spec"].items() if v is not None}
    found["spec"]["heartbeatTime"] = iso(NOW)
    return found


def test_the_revision_is_the_same_for_the_same_pairs_and_differs_for_any_change() -> None:
    first = active_revision({"a": H1, "b": H2})
    assert first == active_revision({"b": H2, "a": H1}) and len(first) == 32
    assert first != active_revision({"a": H1, "b": H3})
    assert first != active_revision({"a": H1, "c": H2})
    assert first != active_revision({"a": H1})
    # no pair can be forged by moving text between a module and its hash
    assert active_revision({"ab": "c"}) != active_revision({"a": "bc"})


def test_only_what_differs_from_the_active_list_is_listed() -> None:
    named = {"same": H1, "newer": H2, "broken": H1, "slow": H1, "installing": H1, "absent": H1}
    entries = [
        PluginReport("same", "running", code_hash=H1, requirements="installed"),
        PluginReport("newer", "running", code_hash=H1),  # still on the old version
        PluginReport("broken", "running", code_hash=H1, failed_code_hash=H2, error="boom"),
        PluginReport("slow", "running", code_hash=H1, loop_blocked_seconds=0.8),
        PluginReport("installing", "loading", requirements="installing"),
        PluginReport("stray", "stopping", code_hash=H3),  # no longer listed
    ]
    listed = differences(entries, named)
    modules = [entry.module for entry in listed]
    assert modules == ["newer", "broken", "slow", "installing", "stray", "absent"]
    assert msgspec.to_builtins(listed[-1]) == {"module": "absent", "state": "waiting"}


def test_a_compact_report_reads_back_as_the_full_report_would() -> None:
    plugins = [running("a", H1), running("b", H2), running("c", H1, error="callback failed")]
    named = {"a": H1, "b": H3, "c": H1, "d": H2}
    compact = reporter(plugins, named).body()
    full = reporter(plugins, None).body()
    assert compact["spec"]["revision"] == active_revision(named)
    assert [entry["module"] for entry in compact["spec"]["plugins"]] == ["b", "c", "d"]
    assert full["spec"]["revision"] is None and len(full["spec"]["plugins"]) == 3

    learnt, unlearnt = ReportBook(ttl=30), ReportBook(ttl=30)
    learnt.learn(KEY, named, now=NOW)
    learnt.put(stored(compact, "u1"), now=NOW)
    unlearnt.put(stored(full, "u2"), now=NOW)
    (expanded,), (plain,) = learnt.snapshot(KEY, NOW).groups, unlearnt.snapshot(KEY, NOW).groups
    assert {m: expanded.plugins.get(m) for m in "abcd"} == {
        **{m: plain.plugins.get(m) for m in "abc"},
        "d": expanded.plugins.get("d"),
    }
    waiting = expanded.plugins.get("d")
    assert waiting is not None and waiting.state == "waiting" and waiting.code_hash is None


def test_a_report_on_an_unknown_revision_counts_only_what_it_lists_until_the_revision_is_learnt() -> None:
    named = {"a": H1, "b": H2}
    body = stored(reporter([running("a", H1), running("b", H3)], named).body())
    book = ReportBook(ttl=30)
    book.put(body, now=NOW)
    (group,) = book.snapshot(KEY, NOW).groups
    assert group.plugins.get("a") is None  # not counted as loaded on a revision nobody named
    entry = group.plugins.get("b")
    assert entry is not None and entry.code_hash == H3
    assert book.learn(("ns", "other"), named, now=NOW) == []  # another service's list
    changes = book.learn(KEY, named, now=NOW)
    assert changes == [ReportChange(KEY, modules=frozenset({"a"}))]
    (group,) = book.snapshot(KEY, NOW).groups
    found = group.plugins.get("a")
    assert found is not None and (found.state, found.code_hash) == ("running", H1)
    assert book.learn(KEY, named, now=NOW) == []  # known: nothing to read again


def test_reports_alike_on_one_revision_share_one_content() -> None:
    named = {f"m{index}": H1 for index in range(200)}
    book = ReportBook(ttl=30)
    book.learn(KEY, named, now=NOW)
    for index in range(50):
        body = reporter([running(m, H1) for m in named], named).body()
        body["metadata"]["name"] = f"pod-{index}-handlers"
        body["spec"]["pod"] = f"pod-{index}"
        assert body["spec"]["plugins"] == []
        book.put(stored(body, f"u{index}"), now=NOW)
    (group,) = book.snapshot(KEY, NOW).groups
    assert len(group.pods) == 50 and len(group.plugins) == 200


def test_only_the_latest_revisions_are_kept() -> None:
    book = ReportBook(ttl=30)
    lists = [{"a": f"{index:064x}"} for index in range(MAX_REVISIONS + 1)]
    for named in lists:
        book.learn(KEY, named, now=NOW)
    oldest, newest = lists[0], lists[-1]
    for named, pod in ((oldest, "old"), (newest, "new")):
        body = reporter([running("a", named["a"])], named).body()
        body["metadata"]["name"], body["spec"]["pod"] = f"{pod}-handlers", pod
        book.put(stored(body, pod), now=NOW)
    by_pod = {group.pods[0]: group.plugins.get("a") for group in book.snapshot(KEY, NOW)}
    assert by_pod["old"] is None  # forgotten revision: this pod is outdated until it follows a newer list
    assert by_pod["new"] is not None and by_pod["new"].code_hash == newest["a"]


@pytest.mark.parametrize("revision", [7, "", "x" * 65, ["a"], {"a": 1}])
def test_a_revision_of_the_wrong_shape_is_read_as_none(revision: Any) -> None:
    body = stored(reporter([running("a", H1)], None).body())
    body["spec"]["revision"] = revision
    book = ReportBook(ttl=30)
    book.learn(KEY, {"a": H2}, now=NOW)
    book.put(body, now=NOW)
    (group,) = book.snapshot(KEY, NOW).groups
    entry = group.plugins.get("a")
    assert entry is not None and entry.code_hash == H1


def test_a_sidecar_whose_revision_the_api_server_drops_writes_full_reports_from_then_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = [running("a", H1), running("b", H2)]
    named = {"a": H1, "b": H2}
    for prunes, sizes in ((False, [0, 0]), (True, [0, 2, 2])):
        sidecar = reporter(plugins, named)
        api = StoredReports(prunes=prunes)
        sidecar.custom = api  # type: ignore[assignment]

        async def twice(sidecar: RuntimeReporter = sidecar) -> None:
            await sidecar.report()
            await sidecar.report()

        asyncio.run(twice())
        assert [len(spec["plugins"]) for spec in api.written] == sizes
        assert sidecar.compact is not prunes
    assert "older than this sidecar" in caplog.text


def test_the_operator_and_the_sidecar_read_one_active_list_as_the_same_revision() -> None:
    entries = [
        ActiveEntry("alpha", H1, "lunaplugin-alpha", "alpha", order=2, settings={"k": "v"}),
        ActiveEntry("beta", H2, "lunaplugin-beta-plugin", "beta-plugin", requirements=("redis>=5",)),
    ]
    body = active_list("handlers", entries)
    found = active_list_code_hashes(body)
    assert found == ("handlers", {"alpha": H1, "beta": H2})
    mirrored = {body["metadata"]["name"]: MirroredConfigMap(body["metadata"]["name"], body["data"], {})}
    sidecar = desired_plugins("handlers", mirrored, lambda module: None)
    assert sidecar.code_hashes is not None
    assert active_revision(sidecar.code_hashes) == active_revision(found[1])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body["metadata"]["labels"].pop("luna.dev/role"),
        lambda body: body["metadata"]["labels"].update({"luna.dev/service": ["x"]}),
        lambda body: body["data"].update({"plugins.json": "{not json"}),
        lambda body: body["data"].update({"LUNA_HANDLERS_ACTIVE_PLUGINS": '{"a": 1}'}),
        lambda body: body["data"].update({"plugins.json": "[1, 2]"}),
        lambda body: body.update({"data": None}),
        lambda body: body.update({"metadata": {}}),
    ],
)
def test_an_active_list_of_the_wrong_shape_teaches_no_revision(mangle: Any) -> None:
    body = active_list("handlers", [ActiveEntry("alpha", H1, "lunaplugin-alpha", "alpha")])
    mangle(body)
    found = active_list_code_hashes(body)
    assert found is None or found == ("handlers", {})


def test_entries_of_the_wrong_shape_are_left_out_of_the_learnt_revision() -> None:
    body = active_list("handlers", [ActiveEntry("alpha", H1, "lunaplugin-alpha", "alpha")])
    body["data"]["LUNA_HANDLERS_ACTIVE_PLUGINS"] = json.dumps(["alpha", 7, ["x"], "ghost", "bad"])
    details = json.loads(body["data"]["plugins.json"])
    details["bad"] = {"codeHash": 12}
    body["data"]["plugins.json"] = json.dumps(details)
    assert active_list_code_hashes(body) == ("handlers", {"alpha": H1})


def test_plugins_under_a_staged_rollout_are_reported_with_their_figures() -> None:
    described = [
        {
            "name": "canaried",
            "state": "running",
            "codeHash": H1,
            "routeAnswers": 40,
            "routeErrors": 3,
            "classes": [
                {"name": "A", "handled": 90, "failed": 10, "dropped": 2},
                {"name": "B", "handled": 5, "failed": 0, "dropped": 0},
                {"name": "Background"},
            ],
        },
        {"name": "plain", "state": "running", "codeHash": H2, "routeAnswers": 7, "classes": []},
    ]
    found = reporter(described, {"canaried": H1, "plain": H2}, rollouts=lambda: frozenset({"canaried"}))
    plugins = found.body()["spec"]["plugins"]
    # the plugin on the named version is listed for its figures; the other, on its named version, is not
    assert plugins == [
        {
            "module": "canaried",
            "state": "running",
            "codeHash": H1,
            "callbacks": 105,
            "failedCallbacks": 10,
            "routeAnswers": 40,
            "routeErrors": 3,
            "dropped": 2,
        }
    ]
    decoded = msgspec.convert(plugins[0], PluginReport)
    assert (decoded.callbacks, decoded.failed_callbacks, decoded.route_errors) == (105, 10, 3)
    assert not decoded.as_named({"canaried": H1})


class CountedReports(StoredReports):
    """:class:`StoredReports` that tells when a write arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.arrived.set()
        return await super().patch_namespaced_custom_object(*args, **kwargs)


@pytest.mark.parametrize(
    "fail",
    [
        lambda found: found.update(failed=1),  # a callback raised
        lambda found: found.update(delivery={"pending": 0, "deadLetters": 1}),  # a batch was dead-lettered
    ],
)
def test_a_new_failure_under_a_rollout_is_reported_without_waiting_for_the_heartbeat(fail: Any) -> None:
    for under_rollout in (True, False):
        classes: list[dict[str, Any]] = [{"name": "A", "handled": 10, "failed": 0, "dropped": 0}]
        plugins = [running("a", H1, classes=classes)]
        sidecar = reporter(
            plugins,
            {"a": H1},
            interval=600.0,  # the heartbeat comes after 8 minutes at the earliest
            rollouts=lambda under_rollout=under_rollout: frozenset({"a"}) if under_rollout else frozenset(),
        )
        api = CountedReports()
        sidecar.custom = api  # type: ignore[assignment]

        async def fail_once(
            sidecar: RuntimeReporter = sidecar,
            api: CountedReports = api,
            wait: float = 60 if under_rollout else 5,
            classes: list[dict[str, Any]] = classes,
        ) -> bool:
            task = asyncio.create_task(sidecar.run())
            try:
                await asyncio.wait_for(api.arrived.wait(), timeout=60)
                api.arrived.clear()
                fail(classes[0])
                try:
                    await asyncio.wait_for(api.arrived.wait(), timeout=wait)
                except TimeoutError:
                    return False
                return True
            finally:
                task.cancel()

        assert asyncio.run(fail_once()) is under_rollout, api.written

"""Full and status passes against a small in-memory API server (no Go-built cluster)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from luna_contract.code import code_hash
from luna_contract.reports import active_revision
from luna_operator.errors import ApiError, PassIncompleteError
from luna_operator.reconciler import COUNTS_INTERVAL, MAX_REPORT_OWNERS, REFUSED_RETRY, ServiceReconciler
from luna_operator.reports import ReportBook
from luna_operator.rollout.planner import RolloutPlan, RolloutPlanner
from luna_operator.validation import Problem, validate_code
from tests.support.fake_cluster import FakeCluster
from tests.support.reports_kit import NOW, report

KEY = ("ns", "handlers")
V1 = "from luna_plugins import BaseBackgroundPlugin\n\nclass P(BaseBackgroundPlugin):\n    pass\n"
V2 = V1 + "\nVERSION = 2\n"
BROKEN = V1 + "\ndef broken(:\n"


class InProcessChecker:
    """The operator's code check, run in this process (trusted test input)."""

    async def check(self, code: str, *, pinned_sha256: str | None = None) -> list[Problem]:
        return validate_code(code, pinned_sha256=pinned_sha256)


class Operator:
    """A reconciler over a fake cluster, with the report book a report watch would fill."""

    def __init__(self, cluster: FakeCluster | None = None, *, now: float = NOW) -> None:
        self.cluster = cluster or FakeCluster()
        self.now = now
        self.reports = ReportBook(ttl=30)
        self.reconciler = ServiceReconciler(
            self.cluster,
            self.cluster.view,
            self.reports,
            checker=InProcessChecker(),
            secrets=self.cluster.secret_book,
            clock=lambda: self.now,
            timer=lambda: self.now,
        )

    async def full(self, *, watch: bool = True) -> None:
        """A full pass; with ``watch`` the view is current before it and shows its writes after."""
        if watch:
            self.cluster.watch()
        await self.reconciler.full_pass(KEY)
        if watch:
            self.cluster.watch()

    def report(self, body: dict[str, Any]) -> str | None:
        """A report arrives; returns the pass it asks for."""
        kinds = {self.reconciler.note(change) for change in self.reports.put(body, now=self.now)}
        return "full" if "full" in kinds else ("status" if "status" in kinds else None)

    def active(self) -> list[str]:
        data = self.cluster.data("luna-plugins-handlers") or {}
        return json.loads(data.get("LUNA_HANDLERS_ACTIVE_PLUGINS", "[]"))


async def test_a_full_pass_renders_and_a_second_one_writes_nothing() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    assert operator.cluster.data("lunaplugin-p") == {"p.py": V1}
    assert operator.active() == ["p"]
    assert operator.cluster.status("p")["phase"] == "Ready"
    assert [event["reason"] for event in operator.cluster.events] == ["Ready"]
    writes = len(operator.cluster.requests)
    await operator.full()
    await operator.full()
    assert len(operator.cluster.requests) == writes  # level-based: nothing more to do, nothing read


async def test_a_view_that_lags_behind_the_writes_causes_no_duplicate_and_no_conflict() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.watch()
    await operator.full(watch=False)
    await operator.full(watch=False)  # the watch has not shown the ConfigMaps yet
    assert operator.cluster.count("create") == 2 and operator.cluster.count("update") == 0
    operator.cluster.add_plugin("p", code=V2)
    operator.cluster.watch()
    await operator.full(watch=False)
    await operator.full(watch=False)
    assert operator.cluster.count("update") == 2  # the plugin's ConfigMap and the active list, once each


async def test_a_configmap_deleted_behind_the_views_back_is_created_again() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    operator.cluster.add_plugin("p", code=V2)
    operator.cluster.watch()
    del operator.cluster.config_maps[("ns", "lunaplugin-p")]  # the view missed the deletion
    await operator.full(watch=False)
    assert operator.cluster.data("lunaplugin-p") == {"p.py": V2}
    assert operator.cluster.requests[-4:-2] == [
        ("update", "configmaps", "lunaplugin-p"),
        ("create", "configmaps", "lunaplugin-p"),
    ]


async def test_a_configmap_of_someone_else_met_on_create_is_reported_not_overwritten_and_recovered_from() -> (
    None
):
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.watch()
    operator.cluster.put_config_map({"metadata": {"name": "lunaplugin-p"}, "data": {"theirs": "1"}})
    for _ in range(2):  # the view did not show it: the create meets it, every pass, until it is gone
        with pytest.raises(PassIncompleteError):
            await operator.full(watch=False)
        assert operator.cluster.data("lunaplugin-p") == {"theirs": "1"}
        status = operator.cluster.status("p")
        assert status["phase"] == "Pending", status
        assert "the operator did not write exists: delete or rename it" in status["message"]
        assert ("ns", "ConfigMap", "lunaplugin-p") in operator.reconciler.blocked
    del operator.cluster.config_maps[("ns", "lunaplugin-p")]  # its owner removes it
    await operator.full(watch=False)
    assert operator.cluster.data("lunaplugin-p") == {"p.py": V1}
    assert operator.cluster.status("p")["phase"] == "Ready"
    assert operator.reconciler.blocked == set()


async def test_an_invalid_update_keeps_the_last_good_version_and_is_announced_once() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.add_plugin("q", code=V1.replace("class P", "class Q"))
    await operator.full()
    operator.cluster.add_plugin("p", code=BROKEN)
    operator.cluster.watch()
    for _ in range(3):
        await operator.full()
    status = operator.cluster.status("p")
    assert status["phase"] == "Invalid" and "keeps serving" in status["message"]
    assert status["codeHash"] == code_hash(V1) and operator.active() == ["p", "q"]
    reasons = [(e["involvedObject"]["name"], e["reason"], e["type"]) for e in operator.cluster.events]
    assert reasons == [("p", "Ready", "Normal"), ("q", "Ready", "Normal"), ("p", "Invalid", "Warning")]


async def test_a_refused_configmap_costs_only_its_plugin() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.add_plugin("q", code=V1.replace("class P", "class Q"))
    operator.cluster.watch()
    operator.cluster.failures[("create", "lunaplugin-p")] = ApiError(422, "denied by an admission policy")
    operator.cluster.watch()
    assert await operator.reconciler.full_pass(KEY) == ("full", REFUSED_RETRY)  # the policy may change
    operator.cluster.watch()
    assert operator.cluster.status("p")["phase"] == "Invalid"
    assert "denied by an admission policy" in operator.cluster.status("p")["message"]
    assert operator.cluster.status("q")["phase"] == "Ready" and operator.active() == ["q"]
    del operator.cluster.failures[("create", "lunaplugin-p")]  # allowed now
    assert await operator.reconciler.full_pass(KEY) is None
    operator.cluster.watch()
    assert operator.cluster.status("p")["phase"] == "Ready" and operator.active() == ["p", "q"]


async def test_reports_update_loaded_without_touching_desired_state() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.add_plugin("q", code=V1.replace("class P", "class Q"))
    await operator.full()
    q_hash = code_hash(V1.replace("class P", "class Q"))
    assert operator.report(report("pod-a", {"p": code_hash(V1), "q": q_hash})) == "full"  # a new owner
    await operator.full()
    owners = operator.cluster.config_maps[("ns", "luna-plugins-handlers")]["metadata"]["ownerReferences"]
    assert ("LunaPluginRuntime", "pod-a-handlers") in {(o["kind"], o["name"]) for o in owners}
    assert operator.cluster.status("p")["loaded"] == "1/1"
    before = list(operator.cluster.requests)
    # a heartbeat: nothing to do
    operator.now += 10
    assert operator.report(report("pod-a", {"p": code_hash(V1), "q": q_hash}, beat=operator.now)) is None
    # pod-a now runs an old q: a status pass, which patches q's status only
    assert operator.report(report("pod-a", {"p": code_hash(V1), "q": "old"}, beat=operator.now)) == "status"
    await operator.reconciler.run(KEY, "status")
    new = operator.cluster.requests[len(before) :]
    assert new == [("patch", "lunaplugins/status", "q")]
    assert operator.cluster.status("q")["loaded"] == "0/1" and operator.cluster.status("p")["loaded"] == "1/1"
    gauges = {g.plugin: (g.outdated, g.failing) for g in operator.reconciler.plugin_gauges()}
    assert gauges == {"p": (0, 0), "q": (1, 0)}


async def test_after_a_restart_compact_reports_count_once_the_first_pass_has_read_the_active_list() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    restarted = Operator(operator.cluster)  # an empty report book, and no ConfigMap event yet
    for pod in ("pod-a", "pod-b"):
        body = report(pod, {})
        body["spec"]["revision"] = active_revision({"p": code_hash(V1)})  # "all as listed"
        restarted.report(body)
    await restarted.full()
    assert restarted.cluster.status("p")["loaded"] == "2/2"


async def test_a_report_that_goes_quiet_stops_counting() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    operator.report(report("pod-a", {"p": code_hash(V1)}))
    operator.report(report("pod-b", {"p": code_hash(V1)}))
    await operator.full()
    assert operator.cluster.status("p")["loaded"] == "2/2"
    operator.now += 20
    operator.report(report("pod-a", {"p": code_hash(V1)}, beat=operator.now))
    operator.now += 15
    for change in operator.reports.expire(operator.now):
        assert operator.reconciler.note(change) == "status"
    await operator.reconciler.run(KEY, "status")
    assert operator.cluster.status("p")["loaded"] == "1/1"


async def test_pods_that_roll_back_are_announced_once_even_after_a_restart() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    operator.cluster.add_plugin("p", code=V2)
    operator.cluster.watch()
    await operator.full()
    rolled = {"state": "running", "codeHash": code_hash(V1), "failedCodeHash": code_hash(V2), "error": "boom"}
    for index in range(3):
        operator.report(report(f"pod-{index}", {"p": rolled}))
        await operator.reconciler.run(KEY, "status")
    operator.now += COUNTS_INTERVAL  # pods that start counting rewrite every status at most this often
    await operator.reconciler.run(KEY, "status")
    operator.cluster.watch()
    warnings = [e for e in operator.cluster.events if e["reason"] == "RolledBack"]
    assert len(warnings) == 1 and "keep serving the last good version" in warnings[0]["message"]
    assert operator.cluster.status("p")["message"].startswith("3 pod(s) report an error: pod-0: boom")
    restarted = Operator(operator.cluster)  # a new operator process: what it announces is seeded from status
    restarted.report(report("pod-0", {"p": rolled}))
    await restarted.full()
    assert len([e for e in operator.cluster.events if e["reason"] == "RolledBack"]) == 1


async def test_a_plugin_gone_from_the_api_server_leaves_the_list_though_the_view_still_shows_it() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    operator.cluster.add_plugin("q", code=V1.replace("class P", "class Q"))
    await operator.full()
    operator.cluster.add_plugin("p", code=V2)  # a change, so p's status is written again ...
    operator.cluster.watch()
    operator.cluster.delete_plugin("p")  # ... but p is gone, and the view missed the deletion
    with pytest.raises(PassIncompleteError, match="'p' is gone"):
        await operator.full(watch=False)
    await operator.full(watch=False)
    assert operator.active() == ["q"]


async def test_code_from_a_configmap_is_read_with_a_get() -> None:
    operator = Operator()
    operator.cluster.put_config_map({"metadata": {"name": "source"}, "data": {"plugin.py": V1}})
    operator.cluster.add_plugin("p", codeFrom={"configMapKeyRef": {"name": "source", "key": "plugin.py"}})
    await operator.full()
    assert ("get", "configmaps", "source") in operator.cluster.requests
    assert operator.cluster.data("lunaplugin-p") == {"p.py": V1}
    operator.cluster.add_plugin("p", codeFrom={"configMapKeyRef": {"name": "missing", "key": "x"}})
    operator.cluster.watch()
    await operator.full()
    status = operator.cluster.status("p")
    assert status["phase"] == "Pending" and "'missing' (spec.codeFrom) not found" in status["message"]


async def test_the_last_plugin_deleted_empties_the_list() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    operator.cluster.delete_plugin("p")
    operator.cluster.watch()
    await operator.full()
    assert operator.active() == []
    assert operator.reconciler.phases() == {}
    # the garbage collector deletes the emptied list; a pass must not make it again
    del operator.cluster.config_maps[("ns", "luna-plugins-handlers")]
    operator.cluster.view.deleted("ns", "luna-plugins-handlers")
    before = len(operator.cluster.requests)
    await operator.full(watch=False)
    await operator.full()
    assert operator.cluster.requests[before:] == [] and operator.cluster.data("luna-plugins-handlers") is None


async def test_a_few_reports_own_the_list_and_pods_coming_and_going_rarely_rewrite_it() -> None:
    operator = Operator()
    operator.cluster.add_plugin("p", code=V1)
    await operator.full()
    bodies = {f"pod-{index}": report(f"pod-{index}", {"p": code_hash(V1)}) for index in range(8)}
    for body in bodies.values():
        operator.report(body)
    await operator.full()

    def report_owners() -> list[str]:
        metadata = operator.cluster.config_maps[("ns", "luna-plugins-handlers")]["metadata"]
        return [o["name"] for o in metadata["ownerReferences"] if o["kind"] == "LunaPluginRuntime"]

    owners = report_owners()
    assert len(owners) == MAX_REPORT_OWNERS and operator.cluster.status("p")["loaded"] == "8/8"
    rewrites = operator.cluster.count("update")
    operator.report(report("pod-new", {"p": code_hash(V1)}))  # one more pod: its status, not the list
    spare = next(name for name in bodies if f"{name}-handlers" not in owners)
    operator.reports.remove(bodies[spare], now=operator.now)  # a pod that owns nothing goes
    await operator.full()
    assert operator.cluster.count("update") == rewrites and operator.cluster.status("p")["loaded"] == "8/8"
    gone = owners[0].removesuffix("-handlers")
    operator.reports.remove(bodies[gone], now=operator.now)  # an owner goes: another one takes its place
    await operator.full()
    assert operator.cluster.count("update") == rewrites + 1
    assert owners[0] not in report_owners() and len(report_owners()) == MAX_REPORT_OWNERS


async def test_pods_that_come_and_go_rewrite_every_status_at_most_so_often() -> None:
    operator = Operator()
    codes = {f"p{index}": V1.replace("class P", f"class P{index}") for index in range(10)}
    for name, code in codes.items():
        operator.cluster.add_plugin(name, code=code)
    await operator.full()
    running = {name: code_hash(code) for name, code in codes.items()}
    patches = operator.cluster.count("patch", "lunaplugins/status")
    operator.report(report("pod-a", running))
    assert await operator.reconciler.run(KEY, "status") is None  # the first change: written at once
    assert operator.cluster.count("patch", "lunaplugins/status") == patches + 10
    for pod in ("pod-b", "pod-c", "pod-d"):  # more pods within the interval: held back ...
        operator.now += 1
        operator.report(report(pod, running))
        again = await operator.reconciler.run(KEY, "status")
        assert again is not None and again[0] == "status" and 0 < again[1] <= COUNTS_INTERVAL
    assert operator.cluster.count("patch", "lunaplugins/status") == patches + 10
    changed = dict(running, p3="new")  # ... but a module whose reports changed is written at once
    operator.report(report("pod-a", changed, beat=operator.now))
    await operator.reconciler.run(KEY, "status")
    assert operator.cluster.count("patch", "lunaplugins/status") == patches + 11
    operator.now += COUNTS_INTERVAL  # and then every count at once
    assert await operator.reconciler.run(KEY, "status") is None
    assert (
        operator.cluster.status("p0")["loaded"] == "4/4" and operator.cluster.status("p3")["loaded"] == "3/4"
    )


async def test_the_plugins_of_a_service_are_planned_together_so_a_slow_prometheus_costs_one_wait() -> None:
    class CountingPlanner(RolloutPlanner):
        in_flight = most = 0

        async def plan(self, outcome: Any, *args: Any) -> RolloutPlan:
            type(self).in_flight += 1
            type(self).most = max(self.most, self.in_flight)
            await asyncio.sleep(0)  # a query to Prometheus in flight
            type(self).in_flight -= 1
            return RolloutPlan(outcome)

    operator = Operator()
    operator.reconciler.rollouts = CountingPlanner(None)
    for name in ("a", "b", "c"):
        operator.cluster.add_plugin(name, code=V1)
    await operator.full()
    assert CountingPlanner.most == 3
    assert sorted(operator.active()) == ["a", "b", "c"]

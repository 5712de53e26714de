"""``spec.isolation`` in the operator: the pass puts it on the plugin's active-list entry (and a
staged rollout's canary runs with it); a value the schema would refuse (a spec stored before the
CRD had the field) makes the plugin Invalid while its version in service keeps its own; the
webhook's checks say the same; and on the real API server the CRD refuses other values, fills in
the default, and the real operator writes the entry."""

from __future__ import annotations

from typing import Any

import pytest

from luna_contract.active_list import ActiveEntry
from luna_contract.code import code_hash
from luna_contract.spec import IN_PROCESS, PROCESS, read_spec
from luna_operator.desired import CheckedCode, decide
from luna_operator.records import PluginRecord
from luna_operator.render import ExistingConfigMap, plugin_configmap, read_plugin_configmap
from luna_operator.reports import ReportedPlugins, ReportGroup, ReportSnapshot
from luna_operator.rollout.planner import RolloutPlanner
from luna_operator.validation import check_spec
from tests.support.operator_harness import Cluster, plugin_manifest, route_code
from tests.support.sidecar_harness import wait_for

GOOD = "class P(BaseBackgroundPlugin):\n    pass\n"
GOOD2 = "class Q(BaseBackgroundPlugin):\n    pass\n"


def plugin(name: str, **spec: Any) -> PluginRecord:
    return PluginRecord(
        "ns", name, f"uid-{name}", 1, "2026-01-01T00:00:00Z", False, {"service": "handlers", **spec}
    )


def stored(name: str, code: str = GOOD) -> ExistingConfigMap:
    body = plugin_configmap(
        plugin=name, uid=f"uid-{name}", service="handlers", module=name, code=code, code_hash=code_hash(code)
    )
    return read_plugin_configmap(body)


def test_the_entry_carries_the_plugins_isolation() -> None:
    (isolated,) = decide([plugin("p", isolation="process")], {"p": CheckedCode(GOOD)}, {})
    assert isolated.phase == "Ready" and isolated.active is not None
    assert isolated.active.isolation == PROCESS
    (plain,) = decide([plugin("p")], {"p": CheckedCode(GOOD)}, {})
    assert plain.active is not None and plain.active.isolation == IN_PROCESS


def test_a_change_of_isolation_alone_changes_the_entry_not_the_stored_version() -> None:
    listed = {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {})}
    (outcome,) = decide(
        [plugin("p", isolation="process")], {"p": CheckedCode(GOOD)}, {"p": stored("p")}, listed
    )
    assert outcome.phase == "Ready" and outcome.active is not None
    assert outcome.active.isolation == PROCESS and outcome.active.code_hash == code_hash(GOOD)
    assert outcome.active != listed["p"]  # the active list changes, so sidecars reload the plugin


@pytest.mark.parametrize(
    ("isolation", "shown"), [("thread", "'thread'"), ("Process", "'Process'"), (1, "a int")]
)
def test_a_refused_isolation_is_invalid_and_the_version_in_service_keeps_its_own(
    isolation: Any, shown: str
) -> None:
    listed = {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {}, isolation=PROCESS)}
    (outcome,) = decide(
        [plugin("p", isolation=isolation)], {"p": CheckedCode(GOOD2)}, {"p": stored("p")}, listed
    )
    assert outcome.phase == "Invalid", outcome.message
    assert f"spec.isolation must be one of inProcess, process, not {shown}" in outcome.message
    assert outcome.active is not None and outcome.active.isolation == PROCESS
    assert outcome.active.code_hash == code_hash(GOOD)  # the new code waits for a valid spec
    (new,) = decide([plugin("p", isolation=isolation)], {"p": CheckedCode(GOOD)}, {})
    assert (new.phase, new.active) == ("Invalid", None)
    # the admission webhook starts from the same checks
    problems = check_spec("p", "p", {"isolation": isolation}).problems
    assert any("spec.isolation" in str(problem) for problem in problems)


def test_valid_values_are_no_problem_for_the_checks() -> None:
    for isolation in ("inProcess", "process"):
        assert check_spec("p", "p", {"isolation": isolation}).problems == []


async def test_a_staged_rollouts_canary_and_stable_version_run_with_the_entrys_isolation() -> None:
    rollout = {"steps": [{"percent": 50}, {"percent": 100}]}
    (outcome,) = decide(
        [plugin("p", isolation="process", rollout=rollout)],
        {"p": CheckedCode(GOOD2)},
        {"p": stored("p", GOOD)},
        {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {})},
    )
    snapshot = ReportSnapshot([ReportGroup(ReportedPlugins({}), ["pod-1", "pod-2"])], 2)
    plan = await RolloutPlanner().plan(outcome, stored("p", GOOD), snapshot, 1000.0)
    entry = plan.outcome.active
    assert entry is not None and entry.canary is not None, plan.outcome.message
    assert entry.code_hash == code_hash(GOOD) and entry.canary.code_hash == code_hash(GOOD2)
    (canary_pod,) = entry.canary.pods
    assert entry.for_pod(canary_pod).isolation == PROCESS
    assert entry.for_pod("another-pod").isolation == PROCESS


@pytest.mark.kube
def test_the_crd_refuses_other_values_and_fills_in_the_default(cluster: Cluster) -> None:
    ns = cluster.namespace
    for bad in ("thread", "Process", "", 1, True, {"mode": "process"}):
        result = cluster.apply(plugin_manifest("bad-isolation", ns, route_code(), isolation=bad), check=False)
        assert result.returncode != 0 and "spec.isolation" in result.stderr, (bad, result.stderr)
    cluster.apply(plugin_manifest("isolated", ns, route_code(), isolation="process"))
    cluster.apply(plugin_manifest("plain", ns, route_code()))
    isolated, plain = cluster.get("lunaplugin", "isolated"), cluster.get("lunaplugin", "plain")
    assert isolated is not None and plain is not None
    assert isolated["spec"]["isolation"] == "process"
    assert plain["spec"]["isolation"] == "inProcess"  # the API server fills in the default
    assert read_spec(plain["spec"]).isolation == IN_PROCESS
    explained = cluster.kube.kubectl("explain", "lunaplugin.spec.isolation").stdout
    assert "inProcess" in explained and "process" in explained


@pytest.mark.kube
def test_the_operator_writes_the_isolation_on_the_active_list_entry(cluster: Cluster, operator: Any) -> None:
    ns = cluster.namespace
    cluster.apply(plugin_manifest("isolated", ns, route_code(), isolation="process"))
    cluster.apply(plugin_manifest("plain", ns, route_code("/plain")))
    cluster.wait_phase("isolated", "Ready")
    cluster.wait_phase("plain", "Ready")
    details = cluster.wait_active(["isolated", "plain"])
    assert details["isolated"]["isolation"] == "process"
    assert "isolation" not in details["plain"]  # the default is left out, as older sidecars read it
    # back to the default: the key goes, the code stays the same version
    before = details["isolated"]["codeHash"]
    cluster.apply(plugin_manifest("isolated", ns, route_code(), isolation="inProcess"))
    after = wait_for(
        lambda: "isolation" not in (entry := cluster.active()[1]["isolated"]) and entry,
        timeout=20,
        what="the isolated plugin's entry to lose its isolation",
    )
    assert after["codeHash"] == before

"""``spec.delivery`` in the operator: the pass puts the plugin's policy on its active-list entry;
a policy the schema would refuse (a spec stored before the CRD had the field) makes the plugin
Invalid while its version in service keeps its own policy; the webhook's checks say the same;
and on the real API server the CRD's schema refuses hostile values and `kubectl explain` shows
the field."""

from __future__ import annotations

from typing import Any

import pytest

from luna_contract.active_list import ActiveEntry
from luna_contract.code import code_hash
from luna_contract.delivery import DeliveryPolicy, RetryPolicy
from luna_contract.spec import read_spec
from luna_operator.desired import CheckedCode, decide
from luna_operator.records import PluginRecord
from luna_operator.render import ExistingConfigMap, plugin_configmap, read_plugin_configmap
from luna_operator.validation import check_spec
from tests.support.operator_harness import Cluster, plugin_manifest, route_code

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


def test_the_entry_carries_the_plugins_policy() -> None:
    delivery = {"mode": "at-least-once", "retry": {"maxElapsed": 0}, "whenFull": "dropOldest"}
    (outcome,) = decide([plugin("p", delivery=delivery)], {"p": CheckedCode(GOOD)}, {})
    assert outcome.phase == "Ready" and outcome.active is not None
    assert outcome.active.delivery == DeliveryPolicy(
        mode="at-least-once", retry=RetryPolicy(max_elapsed=0), when_full="dropOldest"
    )
    (plain,) = decide([plugin("p")], {"p": CheckedCode(GOOD)}, {})
    assert plain.active is not None and plain.active.delivery is None  # the sidecar's settings apply


@pytest.mark.parametrize(
    ("delivery", "named"),
    [
        ({"mode": "exactly-once"}, "spec.delivery.mode"),
        ({"maxQueueBytes": -1}, "spec.delivery.maxQueueBytes"),
        ({"retry": {"initialBackoff": "NaN"}}, "spec.delivery.retry.initialBackoff"),
        ("at-least-once", "spec.delivery"),
    ],
)
def test_a_refused_policy_is_invalid_and_the_version_in_service_keeps_its_own(
    delivery: Any, named: str
) -> None:
    kept = DeliveryPolicy(mode="at-least-once")
    listed = {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {}, delivery=kept)}
    (outcome,) = decide(
        [plugin("p", delivery=delivery)], {"p": CheckedCode(GOOD2)}, {"p": stored("p")}, listed
    )
    assert outcome.phase == "Invalid" and named in outcome.message, outcome.message
    assert outcome.active is not None and outcome.active.delivery == kept
    assert outcome.active.code_hash == code_hash(GOOD)  # the new code waits for a valid policy
    (new,) = decide([plugin("p", delivery=delivery)], {"p": CheckedCode(GOOD)}, {})
    assert (new.phase, new.active) == ("Invalid", None)
    # the admission webhook starts from the same checks
    assert any(named in str(problem) for problem in check_spec("p", "p", {"delivery": delivery}).problems)


def test_a_valid_policy_is_no_problem_for_the_checks() -> None:
    assert check_spec("p", "p", {"delivery": {"mode": "at-least-once"}}).problems == []


@pytest.mark.kube
def test_the_crd_refuses_hostile_policies_and_explains_the_field(cluster: Cluster) -> None:
    ns = cluster.namespace
    for bad in (
        {"mode": "exactly-once"},
        {"maxQueueBytes": 1},
        {"maxDeadLetterBytes": 4096},
        {"whenFull": "block"},
        {"retry": {"initialBackoff": 0}},
        {"breaker": {"failures": 0}},
        "at-least-once",
    ):
        result = cluster.apply(plugin_manifest("bad-delivery", ns, route_code(), delivery=bad), check=False)
        assert result.returncode != 0 and "spec.delivery" in result.stderr, (bad, result.stderr)
    cluster.apply(plugin_manifest("good-delivery", ns, route_code(), delivery={"mode": "at-least-once"}))
    got = cluster.get("lunaplugin", "good-delivery")
    assert got is not None
    # the API server fills in the policy's defaults, which the contract reads back unchanged
    assert got["spec"]["delivery"] == {
        "mode": "at-least-once",
        "maxQueueBytes": 268435456,
        "maxDeadLetterBytes": 67108864,
        "whenFull": "refuse",
    }
    assert read_spec(got["spec"]).delivery == DeliveryPolicy(mode="at-least-once")
    explained = cluster.kube.kubectl("explain", "lunaplugin.spec.delivery").stdout
    assert "at-least-once" in explained and "whenFull" in explained and "retry" in explained

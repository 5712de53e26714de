"""A rollout planned over two passes, for the tests of its judgements: the first pass starts the
rollout and picks the canary pod, the second judges it from the pods' reports (the canary pod
with traffic and no failure) and the PromQL queries asked of a given source."""

from __future__ import annotations

from typing import Any

from luna_contract.active_list import ActiveEntry
from luna_contract.code import code_hash
from luna_operator.desired import CheckedCode, PluginOutcome, decide
from luna_operator.records import PluginRecord
from luna_operator.render import ExistingConfigMap, plugin_configmap, read_plugin_configmap
from luna_operator.reports import Figures, PodPlugin, ReportedPlugins, ReportGroup, ReportSnapshot
from luna_operator.rollout.planner import RolloutPlan, RolloutPlanner

STABLE_CODE = "class P(BaseBackgroundPlugin):\n    pass\n"
CANARY_CODE = "class Q(BaseBackgroundPlugin):\n    pass\n"
STABLE, CANARY = code_hash(STABLE_CODE), code_hash(CANARY_CODE)
PODS = ("handlers-0", "handlers-1")


def plugin(rollout: dict[str, Any]) -> PluginRecord:
    return PluginRecord(
        "shop",
        "sender",
        "uid-sender",
        1,
        "2026-01-01T00:00:00Z",
        False,
        {"service": "handlers", "rollout": rollout},
    )


def in_service() -> ExistingConfigMap:
    body = plugin_configmap(
        plugin="sender",
        uid="uid-sender",
        service="handlers",
        module="sender",
        code=STABLE_CODE,
        code_hash=STABLE,
    )
    return read_plugin_configmap(body)


def snapshot(canary_pods: tuple[str, ...] = ()) -> ReportSnapshot:
    groups = []
    for pod in PODS:
        if pod in canary_pods:
            entry = PodPlugin("running", CANARY, figures=Figures(100, 0, 0, 0, 0, 0.0))
        else:
            entry = PodPlugin(
                "running", STABLE, figures=Figures(100, 0, 0, 0, 0, 0.0) if canary_pods else None
            )
        groups.append(ReportGroup(ReportedPlugins({"sender": entry}), [pod]))
    return ReportSnapshot(groups, len(groups))


def rollout(queries: list[dict[str, Any]], **analysis: Any) -> dict[str, Any]:
    return {
        "steps": [{"percent": 50}, {"percent": 100}],
        # the initial delay: no judgement in the pass that starts the rollout, before any pod runs it
        "analysis": {
            "interval": "10s",
            "initialDelay": "5s",
            "failureLimit": 1,
            "queries": queries,
            **analysis,
        },
    }


def ready_outcome(spec: dict[str, Any], *, prometheus: bool = False) -> PluginOutcome:
    """The pass's outcome for the plugin with ``spec.rollout`` = ``spec``: the canary's code
    checked, the stable version in service and in the active list."""
    (outcome,) = decide(
        [plugin(spec)],
        {"sender": CheckedCode(CANARY_CODE)},
        {"sender": in_service()},
        {"sender": ActiveEntry("sender", STABLE, "lunaplugin-sender", "sender", {})},
        prometheus=prometheus,
    )
    assert outcome.phase == "Ready", outcome.message
    return outcome


async def judged(planner: RolloutPlanner, spec: dict[str, Any], *, start: float = 1000.0) -> RolloutPlan:
    """The plan of the pass that judges the canary (see the module docstring)."""
    outcome = ready_outcome(spec, prometheus=True)
    first = await planner.plan(outcome, in_service(), snapshot(), start)
    assert first.outcome.active is not None and first.outcome.active.canary is not None
    pods = first.outcome.active.canary.pods
    assert len(pods) == 1
    return await planner.plan(outcome, in_service(), snapshot(tuple(pods)), start + 11)

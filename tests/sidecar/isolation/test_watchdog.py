"""Charging blocked event-loop time to plugins: the stack walk, the ledger and the watchdog."""

from __future__ import annotations

import sys
import time
import types

from prometheus_client import CollectorRegistry

from luna_sidecar.isolation.watchdog import BUDGET_WINDOW, BlockLedger, LoopWatchdog, plugin_on_stack
from luna_sidecar.observability.metrics import RuntimeMetrics
from tests.support.runtime import metric_value, wait_until


def frame_in(module_name: str) -> types.FrameType:
    """A frame whose globals are those of a module called ``module_name``, called from here."""
    namespace: dict[str, object] = {"__name__": module_name, "sys": sys}
    exec("def here():\n    return sys._getframe()\n", namespace)
    frame: types.FrameType = namespace["here"]()  # type: ignore[operator]
    return frame


def test_the_innermost_plugin_on_the_stack_is_charged() -> None:
    frame = frame_in("helper")  # a helper's frame, called from this test module
    assert plugin_on_stack(frame, frozenset({"some_plugin"})) is None
    assert plugin_on_stack(frame, frozenset({__name__})) == __name__, "the caller up the stack"
    assert plugin_on_stack(frame_in("kettle"), frozenset({"kettle", __name__})) == "kettle"
    assert plugin_on_stack(None, frozenset({"kettle"})) is None


def test_the_ledger_charges_tracked_plugins_only_and_keeps_a_window() -> None:
    registry = CollectorRegistry()
    ledger = BlockLedger(RuntimeMetrics(registry))
    assert ledger.charge("kettle", 1.0, now=0.0) is None, "not tracked: not charged"
    ledger.track("kettle")
    assert ledger.charge("kettle", 1.0, now=100.0) == 1.0
    assert ledger.charge("kettle", 0.5, now=110.0) == 1.5
    assert ledger.charge("kettle", 0.25, now=100.0 + BUDGET_WINDOW + 1) == 0.75, "the first fell out"
    assert ledger.total("kettle") == 1.75
    assert metric_value(registry, "luna_plugin_loop_blocked_seconds_total", {"plugin": "kettle"}) == 1.75
    assert ledger.flag("kettle") and not ledger.flag("kettle"), "reported over budget once"
    ledger.clear_recent("kettle")
    assert ledger.recent("kettle", now=200.0) == 0 and ledger.flag("kettle")
    ledger.forget("kettle")
    assert ledger.total("kettle") == 0 and "kettle" not in ledger.plugins
    assert ledger.charge("kettle", 1.0, now=300.0) is None


async def test_the_watchdog_charges_a_sleep_on_the_loop_and_reports_the_budget() -> None:
    registry = CollectorRegistry()
    metrics = RuntimeMetrics(registry)
    ledger = BlockLedger(metrics)
    ledger.track(__name__)
    over: list[tuple[str, float]] = []
    watchdog = LoopWatchdog(
        threshold=0.05,
        ledger=ledger,
        metrics=metrics,
        budget=0.2,
        over_budget=lambda p, s: over.append((p, s)),
    )
    watchdog.start()
    try:
        time.sleep(0.4)  # noqa: ASYNC251 - blocking the loop on purpose: this module is the "plugin"
        await wait_until(lambda: over, timeout=5, what="the budget to be reported")
    finally:
        watchdog.stop()
    assert over[0][0] == __name__ and over[0][1] > 0.2
    assert ledger.total(__name__) >= 0.3
    assert metric_value(registry, "luna_event_loop_blocked_seconds_total") >= ledger.total(__name__)

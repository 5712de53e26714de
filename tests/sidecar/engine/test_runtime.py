"""The runtime converging on a desired plugin list, in-process, with plugin code given as bytes."""

from __future__ import annotations

import sys
import textwrap
import time
import types
from collections.abc import Callable
from typing import Any

import pytest

from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.desired.sources import DesiredPlugin, PluginSource
from luna_sidecar.engine.routing import RouteConflictError
from luna_sidecar.observability.metrics import PluginState
from tests.support.runtime import RuntimeKit, metric_value, source, wait_until

MakeRuntime = Callable[..., RuntimeKit]


def code(recorder: types.ModuleType, body: str) -> str:
    return (
        "import asyncio\n"
        f"import {recorder.__name__} as rec\n"
        "from luna_plugins.base.plugins_meta.base_plugins import (\n"
        "    BaseBackgroundPlugin, BaseEventPlugin, pluginHTTPResponse,\n"
        ")\n" + textwrap.dedent(body)
    )


def kettle(recorder: types.ModuleType, version: str = "v1", *, path: str = "/kettle", extra: str = "") -> str:
    """A background plugin serving ``path`` and recording its lifecycle with ``version``."""
    return code(
        recorder,
        f"""
        VERSION = {version!r}

        class Kettle(BaseBackgroundPlugin):
            def __init__(self, app):
                super().__init__(app)
                rec.events.append(("init", VERSION, dict(self.settings)))

            async def initialize(self):
                rec.events.append(("initialize", VERSION))
                self.addRoute({path!r}, lambda request: pluginHTTPResponse(body=VERSION))
                {extra or "pass"}

            async def close(self):
                rec.events.append(("close", VERSION))
        """,
    )


def desired(*sources: PluginSource) -> list[DesiredPlugin]:
    return [DesiredPlugin(item.module, item) for item in sources]


def served_by(kit: RuntimeKit, path: str, method: str = "GET") -> str | None:
    entry, _, _ = kit.routes.resolve(method, path)
    if entry is None:
        return None
    response = entry.spec.endpoint(None)  # type: ignore[arg-type]
    return response.body.decode()  # type: ignore[union-attr]


def reloads(kit: RuntimeKit, module: str, result: str) -> float:
    return metric_value(kit.registry, "luna_plugin_reloads_total", {"plugin": module, "result": result})


async def test_load_runs_the_plugin(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("kettle")
    first = source(name, kettle(recorder))
    await kit.runtime.apply(desired(first))
    slot = kit.slot(name)
    assert slot["state"] == "running"
    assert slot["codeHash"] == first.code_hash
    assert slot["origin"] == f"<{name}.py>"
    assert (slot["error"], slot["failedCodeHash"]) == (None, None)
    assert slot["classes"] == [{"name": "Kettle", "kind": "background"}]
    assert slot["routes"] == ["GET /kettle"]
    assert served_by(kit, "/kettle") == "v1"
    assert recorder.events == [("init", "v1", {}), ("initialize", "v1")]
    assert sys.modules[name].VERSION == "v1", "a running plugin module is importable"
    assert reloads(kit, name, "success") == 1
    assert kit.runtime.snapshot() == [PluginState(name, first.code_hash, "running", [])]


async def test_reload_swaps_routes_and_closes_the_old_version(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("kettle")
    await kit.runtime.apply(desired(source(name, kettle(recorder, "v1"))))
    second = source(name, kettle(recorder, "v2", path="/kettle2"))
    await kit.runtime.apply(desired(second))
    assert recorder.events[2:] == [("init", "v2", {}), ("initialize", "v2"), ("close", "v1")]
    assert served_by(kit, "/kettle") is None
    assert served_by(kit, "/kettle2") == "v2"
    assert kit.slot(name)["codeHash"] == second.code_hash
    assert sys.modules[name].VERSION == "v2"
    assert reloads(kit, name, "success") == 2


@pytest.mark.parametrize(
    ("broken_body", "error_start"),
    [
        ("def broken(:", "import: SyntaxError"),
        ("raise RuntimeError('import time')", "import: RuntimeError: import time"),
    ],
)
async def test_reload_failing_at_import_keeps_old_version(
    make_runtime: MakeRuntime,
    recorder: types.ModuleType,
    module_name: Callable[[str], str],
    broken_body: str,
    error_start: str,
) -> None:
    kit = make_runtime()
    name = module_name("kettle")
    good = source(name, kettle(recorder))
    await kit.runtime.apply(desired(good))
    bad = source(name, broken_body + "\n")
    await kit.runtime.apply(desired(bad))
    slot = kit.slot(name)
    assert slot["state"] == "running"
    assert slot["codeHash"] == good.code_hash
    assert slot["failedCodeHash"] == bad.code_hash
    assert slot["error"].startswith(error_start)
    assert served_by(kit, "/kettle") == "v1"
    assert ("close", "v1") not in recorder.events
    assert sys.modules[name].VERSION == "v1"
    assert reloads(kit, name, "failure") == 1
    state = kit.runtime.snapshot()[0]
    assert (state.code_hash, state.state) == (good.code_hash, "running")


async def test_reload_failing_at_initialize_keeps_old_version(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("kettle")
    good = source(name, kettle(recorder, "v1"))
    await kit.runtime.apply(desired(good))
    bad = source(name, kettle(recorder, "v2", extra="raise ValueError('v2 is broken')"))
    await kit.runtime.apply(desired(bad))
    slot = kit.slot(name)
    assert (slot["state"], slot["codeHash"], slot["failedCodeHash"]) == (
        "running",
        good.code_hash,
        bad.code_hash,
    )
    assert slot["error"].startswith("initialize: Kettle.initialize() raised ValueError: v2 is broken")
    assert served_by(kit, "/kettle") == "v1", "the old version keeps answering"
    assert recorder.events[-1] == ("close", "v2"), "the failed new version is closed"
    assert ("close", "v1") not in recorder.events


async def test_going_back_to_the_running_version_clears_the_failure(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("kettle")
    good = source(name, kettle(recorder))
    await kit.runtime.apply(desired(good))
    await kit.runtime.apply(desired(source(name, "raise SystemExit\n")))
    assert kit.slot(name)["failedCodeHash"] is not None
    await kit.runtime.apply(desired(good))
    slot = kit.slot(name)
    assert (slot["state"], slot["failedCodeHash"], slot["error"]) == ("running", None, None)
    assert recorder.events.count(("initialize", "v1")) == 1, "the running version is not reloaded"


async def test_hanging_initialize_fails_after_lifecycle_timeout(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime(lifecycle_timeout=0.2)
    name = module_name("hang")
    started = time.monotonic()
    await kit.runtime.apply(desired(source(name, kettle(recorder, extra="await asyncio.Event().wait()"))))
    assert time.monotonic() - started < 2.0
    slot = kit.slot(name)
    assert slot["state"] == "failed"
    assert slot["error"] == "initialize: Kettle.initialize() did not finish within 0.2 s"
    assert slot["codeHash"] is None
    assert served_by(kit, "/kettle") is None, "routes of a failed version never go live"
    assert recorder.events[-1] == ("close", "v1")
    assert name not in sys.modules


async def test_second_plugin_claiming_a_route_fails(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    first, second = module_name("first"), module_name("second")
    await kit.runtime.apply(
        desired(source(first, kettle(recorder, "first")), source(second, kettle(recorder, "second")))
    )
    assert kit.slot(first)["state"] == "running"
    later = kit.slot(second)
    assert later["state"] == "failed"
    assert later["error"] == f"routes: GET /kettle is already served by plugin '{first}'"
    assert served_by(kit, "/kettle") == "first"
    assert ("close", "second") in recorder.events
    assert ("close", "first") not in recorder.events
    assert [entry["name"] for entry in kit.runtime.describe()] == [first, second]


async def test_unload_closes_the_plugin_and_removes_everything(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    keep, drop = module_name("keep"), module_name("drop")
    await kit.runtime.apply(
        desired(source(keep, kettle(recorder, "keep", path="/keep")), source(drop, kettle(recorder, "drop")))
    )
    await kit.runtime.apply(desired(source(keep, kettle(recorder, "keep", path="/keep"))))
    assert [entry["name"] for entry in kit.runtime.describe()] == [keep]
    assert recorder.events[-1] == ("close", "drop")
    assert ("close", "keep") not in recorder.events
    assert served_by(kit, "/kettle") is None
    assert served_by(kit, "/keep") == "keep"
    assert drop not in sys.modules
    await kit.runtime.apply([])
    assert kit.runtime.describe() == []
    assert recorder.events[-1] == ("close", "keep")


async def test_imported_plugin_classes_are_not_instantiated_again(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    base, user = module_name("base"), module_name("user")
    user_code = code(
        recorder,
        f"""
        from {base} import Kettle

        class Teapot(BaseBackgroundPlugin):
            def __init__(self, app):
                super().__init__(app)
                rec.events.append(("init", "teapot", {{}}))
        """,
    )
    await kit.runtime.apply(desired(source(base, kettle(recorder, "base")), source(user, user_code)))
    assert kit.slot(user)["state"] == "running"
    assert [event for event in recorder.events if event[0] == "init"] == [
        ("init", "base", {}),
        ("init", "teapot", {}),
    ]
    assert [item["name"] for item in kit.slot(user)["classes"]] == ["Teapot"]


async def test_settings_reach_the_plugin_in_init(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("configured")
    settings = {"tickSeconds": 0.5, "target": {"url": "http://x"}, "tags": ["a"]}
    await kit.runtime.apply(desired(source(name, kettle(recorder), settings)))
    assert recorder.events[0] == (
        "init",
        "v1",
        {"tickSeconds": 0.5, "target": {"url": "http://x"}, "tags": ("a",)},
    )
    [instance] = kit.instances(name)
    with pytest.raises(TypeError):
        instance.settings["tickSeconds"] = 1


async def test_changed_settings_reload_the_plugin(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("configured")
    await kit.runtime.apply(desired(source(name, kettle(recorder), {"n": 1})))
    await kit.runtime.apply(desired(source(name, kettle(recorder), {"n": 2})))
    assert [event for event in recorder.events if event[0] in ("init", "close")] == [
        ("init", "v1", {"n": 1}),
        ("init", "v1", {"n": 2}),
        ("close", "v1"),
    ]


async def test_apply_with_the_same_hash_is_a_no_op(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("same")
    await kit.runtime.apply(desired(source(name, kettle(recorder), {"n": 1})))
    before = kit.slot(name)
    [instance] = kit.instances(name)
    await kit.runtime.apply(desired(source(name, kettle(recorder), {"n": 1})))
    await kit.runtime.apply(desired(source(name, kettle(recorder), {"n": 1})), retry_failed=True)
    assert kit.slot(name) == before
    assert kit.instances(name) == [instance]
    assert len(recorder.events) == 2
    assert reloads(kit, name, "success") == 1


async def test_a_failed_hash_is_retried_only_on_request(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("flaky")
    flaky = source(name, kettle(recorder, extra="raise RuntimeError('backend down')"))
    await kit.runtime.apply(desired(flaky))
    assert kit.slot(name)["state"] == "failed"
    changed_at = kit.slot(name)["changedAt"]
    await kit.runtime.apply(desired(flaky))
    assert recorder.events.count(("initialize", "v1")) == 1, "the failed version is not tried again"
    assert kit.slot(name)["changedAt"] == changed_at
    await kit.runtime.apply(desired(flaky), retry_failed=True)
    assert recorder.events.count(("initialize", "v1")) == 2
    assert kit.slot(name)["state"] == "failed"
    assert reloads(kit, name, "failure") == 1, "the same failure again is not counted twice"


async def test_fixed_code_recovers_a_failed_plugin(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("fixed")
    await kit.runtime.apply(desired(source(name, "import not_a_module_anywhere_xyz\n")))
    failed = kit.slot(name)
    assert failed["state"] == "failed"
    assert "ModuleNotFoundError" in failed["error"]
    await kit.runtime.apply(desired(source(name, kettle(recorder))))
    slot = kit.slot(name)
    assert (slot["state"], slot["error"], slot["failedCodeHash"]) == ("running", None, None)


async def test_missing_source_marks_failed_but_keeps_a_running_version(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    running, missing = module_name("running"), module_name("missing")
    await kit.runtime.apply(desired(source(running, kettle(recorder))))
    await kit.runtime.apply(
        [
            DesiredPlugin(running, None, "cannot read it"),
            DesiredPlugin(missing, None, "plugin file not found"),
        ]
    )
    assert (kit.slot(running)["state"], kit.slot(running)["error"]) == ("running", "cannot read it")
    assert (kit.slot(missing)["state"], kit.slot(missing)["error"]) == ("failed", "plugin file not found")
    assert served_by(kit, "/kettle") == "v1"


async def test_slots_follow_the_desired_order(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    a, b = module_name("a"), module_name("b")
    sources = source(a, kettle(recorder, "a", path="/a")), source(b, kettle(recorder, "b", path="/b"))
    await kit.runtime.apply(desired(*sources))
    await kit.runtime.apply(desired(*reversed(sources)))
    assert [entry["name"] for entry in kit.runtime.describe()] == [b, a]
    assert recorder.events.count(("initialize", "a")) == 1


MONITOR = """
class Monitor(BaseEventPlugin):
    eventName = "monitoring_event"

    async def handleEvent(self, points, logger):
        rec.events.append((VERSION, [point.series for point in points], logger.name))
"""


async def test_event_plugins_receive_points_and_reload_moves_the_queue(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("monitor")
    await kit.runtime.apply(desired(source(name, code(recorder, "VERSION = 'v1'\n" + MONITOR))))
    assert kit.slot(name)["classes"] == [
        {
            "name": "Monitor",
            "kind": "event",
            "eventName": "monitoring_event",
            "queue": {"depth": 0, "items": 0, "capacity": 10},
            "handled": 0,
            "failed": 0,
            "dropped": 0,
            "droppedItems": 0,
            "lastError": None,
            "callbackOverdueSeconds": None,
        }
    ]
    kit.bus.publish_points([MonitoringPoint("one", 1.0)])
    await wait_until(lambda: len(recorder.events) == 1, what="the first batch")
    assert recorder.events == [("v1", ["one"], f"luna.plugins.{name}")]
    await kit.runtime.apply(desired(source(name, code(recorder, "VERSION = 'v2'\n" + MONITOR))))
    kit.bus.publish_points([MonitoringPoint("two", 2.0)])
    await wait_until(lambda: len(recorder.events) == 2, what="the batch after the reload")
    assert recorder.events[1] == ("v2", ["two"], f"luna.plugins.{name}")
    assert kit.slot(name)["classes"][0]["handled"] == 1
    assert len(kit.runtime.snapshot()[0].queues) == 1


async def test_routes_added_while_running_go_live_and_stop_after_reload(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("live")
    await kit.runtime.apply(desired(source(name, kettle(recorder, "v1"))))
    [old] = kit.instances(name)
    old.addRoute("/later", lambda request: _text("later"))
    assert served_by(kit, "/later") == "later"
    assert kit.slot(name)["routes"] == ["GET /kettle", "GET /later"]
    await kit.runtime.apply(desired(source(name, kettle(recorder, "v2"))))
    assert served_by(kit, "/later") is None
    old.addRoute("/zombie", lambda request: _text("zombie"))
    assert served_by(kit, "/zombie") is None, "a retired version cannot add routes"


async def test_a_running_plugin_route_another_plugin_serves_is_refused_at_add_route(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    first, second = module_name("first"), module_name("second")
    await kit.runtime.apply(
        desired(
            source(first, kettle(recorder, "first")), source(second, kettle(recorder, "second", path="/pot"))
        )
    )
    [plugin] = kit.instances(second)
    with pytest.raises(RouteConflictError, match=f"already served by plugin '{first}'"):
        plugin.addRoute("/kettle", lambda request: _text("stolen"))
    assert served_by(kit, "/kettle") == "first"
    assert kit.slot(second)["routes"] == ["GET /pot"]
    assert [spec.path for spec in kit.runtime.app.router.routes_of(plugin)] == ["/pot"]


async def test_plugin_instances_carry_no_runtime_state_and_closed_versions_are_forgotten(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name, broken = module_name("kept"), module_name("broken")
    await kit.runtime.apply(desired(source(name, kettle(recorder, "v1"))))
    [old] = kit.instances(name)
    assert set(vars(old)) == {"app", "settings"}, "the runtime writes nothing into plugin instances"
    crash = "rec.events.append(('broken', self)); raise RuntimeError('no')"
    await kit.runtime.apply(
        desired(
            source(name, kettle(recorder, "v2")),
            source(broken, kettle(recorder, "b", path="/b", extra=crash)),
        )
    )
    [new] = kit.instances(name)
    assert kit.slot(broken)["state"] == "failed"
    router = kit.runtime.plugin_routes
    assert router.routes_of(old) == []
    assert [spec.path for spec in router.routes_of(new)] == ["/kettle"]
    [failed] = [event[1] for event in recorder.events if event[0] == "broken"]
    assert router.routes_of(failed) == [], "a version that failed to load leaves nothing behind"


def _text(body: str) -> Any:
    from luna_plugins import pluginHTTPResponse

    return pluginHTTPResponse(body=body)


async def test_shutdown_drains_then_closes_in_reverse_order(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    first, second = module_name("first"), module_name("second")
    monitor = code(
        recorder,
        "VERSION = 'm'\n" + MONITOR + "\n    async def close(self):\n        rec.events.append('close m')\n",
    )
    await kit.runtime.apply(desired(source(first, monitor), source(second, kettle(recorder, "k"))))
    kit.bus.publish_points([MonitoringPoint("late", 1.0)])
    lost = await kit.runtime.shutdown(time.monotonic() + 2.0)
    assert lost == 0
    assert recorder.events[-3:] == [("m", ["late"], f"luna.plugins.{first}"), ("close", "k"), "close m"]
    assert served_by(kit, "/kettle") is None
    assert {entry["state"] for entry in kit.runtime.describe()} == {"stopping"}


async def test_changed_settings_retry_a_failed_plugin(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name = module_name("needs_key")
    body = kettle(recorder, extra="if 'key' not in self.settings: raise KeyError('key')")
    await kit.runtime.apply(desired(source(name, body)))
    assert kit.slot(name)["state"] == "failed"
    await kit.runtime.apply(desired(source(name, body, {"key": "value"})))
    assert kit.slot(name)["state"] == "running"


async def test_initialize_raising_cancelled_error_marks_the_plugin_failed(
    make_runtime: MakeRuntime, recorder: types.ModuleType, module_name: Callable[[str], str]
) -> None:
    kit = make_runtime()
    name, other = module_name("cancels"), module_name("other")
    await kit.runtime.apply(
        desired(
            source(name, kettle(recorder, "c", extra="raise asyncio.CancelledError()")),
            source(other, kettle(recorder, "o", path="/other")),
        )
    )
    assert kit.slot(name)["state"] == "failed"
    assert kit.slot(other)["state"] == "running"


async def test_a_change_that_makes_the_runtime_raise_fails_only_that_plugin(
    make_runtime: MakeRuntime,
    recorder: types.ModuleType,
    module_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever applying one plugin's change raises (here: the route table itself), that plugin
    fails with the reason, its new version is closed, and the plugins after it still apply."""
    kit = make_runtime()
    bad, good = module_name("bad"), module_name("good")
    real_replace = kit.routes.replace

    def replace(plugin: str, specs: Any) -> None:
        specs = list(specs)
        if plugin == bad and specs:
            raise RuntimeError("the table broke")
        real_replace(plugin, specs)

    monkeypatch.setattr(kit.routes, "replace", replace)
    await kit.runtime.apply(
        desired(
            source(bad, kettle(recorder, "bad", path="/bad")),
            source(good, kettle(recorder, "good", path="/good")),
        )
    )
    assert kit.slot(bad)["state"] == "failed"
    assert "routes: RuntimeError: the table broke" in kit.slot(bad)["error"]
    assert ("close", "bad") in recorder.events
    assert kit.slot(good)["state"] == "running"
    assert served_by(kit, "/good") == "good"
    assert served_by(kit, "/bad") is None

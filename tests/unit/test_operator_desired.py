"""Deciding phases and the active list for all plugins of a service at once."""

from __future__ import annotations

import json
from typing import Any

from luna_operator.desired import ResolvedCode, decide
from luna_operator.render import active_list, active_list_key, plugin_configmap
from luna_operator.store import PluginRecord, PluginStore
from luna_operator.validation import code_hash

GOOD = "class P(BaseBackgroundPlugin):\n    pass\n"
GOOD2 = "class Q(BaseBackgroundPlugin):\n    pass\n"
BAD = "def f(:\n"


def plugin(
    name: str, created: str = "2026-01-01T00:00:00Z", deleting: bool = False, **spec: Any
) -> PluginRecord:
    return PluginRecord("ns", name, f"uid-{name}", 1, created, deleting, {"service": "handlers", **spec})


def test_valid_enabled_plugins_are_ready_and_active_in_order() -> None:
    plugins = [plugin("b-plugin", order=1), plugin("a-plugin", order=1), plugin("z", order=-1)]
    codes = {p.name: ResolvedCode(GOOD) for p in plugins}
    outcomes = decide(plugins, codes, {})
    assert {o.plugin.name: o.phase for o in outcomes} == dict.fromkeys(["b-plugin", "a-plugin", "z"], "Ready")
    rendered = active_list("handlers", [o.active for o in outcomes if o.active])
    assert json.loads(rendered["data"][active_list_key("handlers")]) == ["z", "a_plugin", "b_plugin"]
    details = json.loads(rendered["data"]["plugins.json"])
    assert details["z"] == {
        "codeHash": code_hash(GOOD),
        "configMap": "lunaplugin-z",
        "plugin": "z",
        "settings": {},
    }


def test_disabled_plugins_leave_the_list() -> None:
    (outcome,) = decide([plugin("p", enabled=False)], {"p": ResolvedCode(GOOD)}, {})
    assert (outcome.phase, outcome.active, outcome.code_hash) == ("Disabled", None, code_hash(GOOD))


def test_invalid_update_keeps_the_last_good_version_serving() -> None:
    (outcome,) = decide([plugin("p")], {"p": ResolvedCode(BAD)}, {"p": code_hash(GOOD)})
    assert outcome.phase == "Invalid" and "line 1: syntax error" in outcome.message
    assert "keeps serving" in outcome.message
    assert outcome.code is None  # the ConfigMap is not overwritten
    assert outcome.active is not None and outcome.active.code_hash == code_hash(GOOD)


def test_invalid_new_plugin_is_not_active() -> None:
    (outcome,) = decide([plugin("p")], {"p": ResolvedCode(BAD)}, {})
    assert (outcome.phase, outcome.active) == ("Invalid", None)


def test_missing_code_from_is_pending() -> None:
    (outcome,) = decide(
        [plugin("p")], {"p": ResolvedCode(None, "ConfigMap 'src' (spec.codeFrom) not found")}, {}
    )
    assert (outcome.phase, outcome.message) == ("Pending", "ConfigMap 'src' (spec.codeFrom) not found")


def test_duplicate_module_the_older_wins() -> None:
    older = plugin("first", created="2026-01-01T00:00:00Z", module="shared")
    newer = plugin("second", created="2026-01-02T00:00:00Z", module="shared")
    outcomes = {
        o.plugin.name: o
        for o in decide([older, newer], {"first": ResolvedCode(GOOD), "second": ResolvedCode(GOOD2)}, {})
    }
    assert outcomes["first"].phase == "Ready"
    assert (
        outcomes["second"].phase == "Invalid"
        and "already provided by LunaPlugin 'first'" in outcomes["second"].message
    )
    assert outcomes["second"].active is None


def test_plugins_being_deleted_leave_the_list() -> None:
    assert decide([plugin("p", deleting=True)], {}, {"p": code_hash(GOOD)}) == []


def test_plugin_configmap_is_owned_and_labelled() -> None:
    body = plugin_configmap(plugin="p", uid="u1", service="handlers", module="p", code=GOOD, code_hash="h")
    assert body["data"] == {"p.py": GOOD}
    assert body["metadata"]["labels"]["luna.dev/service"] == "handlers"
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "luna-plugins-operator"
    assert body["metadata"]["annotations"] == {"luna.dev/code-hash": "h"}
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LunaPlugin", "u1", True)


def test_store_reports_old_and_new_service_when_a_plugin_moves() -> None:
    store = PluginStore()
    assert store.put(plugin("p")) == {("ns", "handlers")}
    moved = PluginRecord("ns", "p", "uid-p", 2, "", False, {"service": "matcher"})
    assert store.put(moved) == {("ns", "handlers"), ("ns", "matcher")}
    assert store.remove("ns", "p") == {("ns", "matcher")}
    assert store.remove("ns", "p") == set()


def test_store_asks_no_reconcile_for_a_status_only_change() -> None:
    store = PluginStore()
    record = PluginRecord("ns", "p", "uid-p", 1, "t0", False, {"service": "handlers", "code": "x"})
    assert store.put(record) == {("ns", "handlers")}
    written = PluginRecord("ns", "p", "uid-p", 1, "t0", False, dict(record.spec), {"phase": "Ready"})
    assert store.put(written) == set()
    assert store.get("ns", "p") is written  # the store still holds the newest status
    for changed in (
        PluginRecord("ns", "p", "uid-p", 2, "t0", False, {"service": "handlers", "code": "y"}),
        PluginRecord("ns", "p", "uid-p", 2, "t0", True, {"service": "handlers", "code": "y"}),
        PluginRecord("ns", "p", "uid-q", 1, "t1", False, {"service": "handlers", "code": "y"}),
    ):
        assert store.put(changed) == {("ns", "handlers")}, changed

"""Deciding phases, ConfigMap contents and the active list for all plugins of a service at once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from luna_contract.active_list import ActiveEntry
from luna_contract.code import code_hash
from luna_contract.names import active_list_key
from luna_operator.desired import CheckedCode, PluginOutcome, after_failed_write, decide
from luna_operator.records import PluginRecord
from luna_operator.render import (
    ExistingConfigMap,
    StoredVersion,
    active_list,
    plugin_configmap,
    read_plugin_configmap,
)
from luna_operator.validation import Problem

GOOD = "class P(BaseBackgroundPlugin):\n    pass\n"
GOOD2 = "class Q(BaseBackgroundPlugin):\n    pass\n"
SYNTAX = (Problem("syntax error: invalid syntax", 1),)


def plugin(
    name: str, created: str = "2026-01-01T00:00:00Z", deleting: bool = False, **spec: Any
) -> PluginRecord:
    return PluginRecord("ns", name, f"uid-{name}", 1, created, deleting, {"service": "handlers", **spec})


def valid(code: str = GOOD) -> CheckedCode:
    return CheckedCode(code)


def invalid(code: str = "def f(:\n") -> CheckedCode:
    return CheckedCode(code, SYNTAX)


def stored(
    name: str, code: str = GOOD, module: str | None = None, service: str = "handlers", uid: str | None = None
) -> ExistingConfigMap:
    """The ConfigMap the operator wrote for plugin ``name`` (as ``read_plugin_configmap`` sees it)."""
    body = plugin_configmap(
        plugin=name,
        uid=uid or f"uid-{name}",
        service=service,
        module=module or name.replace("-", "_"),
        code=code,
        code_hash=code_hash(code),
    )
    return read_plugin_configmap(body)


def by_name(outcomes: list[PluginOutcome]) -> dict[str, PluginOutcome]:
    return {outcome.plugin.name: outcome for outcome in outcomes}


def test_valid_enabled_plugins_are_ready_and_active_in_order() -> None:
    plugins = [plugin("b-plugin", order=1), plugin("a-plugin", order=1), plugin("z", order=-1)]
    outcomes = decide(plugins, {p.name: valid() for p in plugins}, {})
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
    assert by_name(outcomes)["z"].stored == StoredVersion("z", GOOD, code_hash(GOOD), "handlers")


def test_disabled_plugins_leave_the_list_but_their_code_is_written() -> None:
    (outcome,) = decide([plugin("p", enabled=False)], {"p": valid()}, {})
    assert (outcome.phase, outcome.active, outcome.code_hash) == ("Disabled", None, code_hash(GOOD))
    assert outcome.stored is not None and outcome.stored.code == GOOD


def test_invalid_update_keeps_the_last_good_version_serving() -> None:
    (outcome,) = decide([plugin("p")], {"p": invalid()}, {"p": stored("p")})
    assert outcome.phase == "Invalid" and "line 1: syntax error" in outcome.message
    assert "keeps serving" in outcome.message
    assert outcome.stored == StoredVersion("p", GOOD, code_hash(GOOD), "handlers")  # unchanged
    assert outcome.active is not None and outcome.active.code_hash == code_hash(GOOD)


def test_invalid_new_plugin_is_not_active() -> None:
    (outcome,) = decide([plugin("p")], {"p": invalid()}, {})
    assert (outcome.phase, outcome.active, outcome.stored) == ("Invalid", None, None)


def test_missing_code_from_is_pending_and_not_a_transient_failure() -> None:
    waiting = CheckedCode(None, waiting="ConfigMap 'src' (spec.codeFrom) not found")
    (outcome,) = decide([plugin("p")], {"p": waiting}, {})
    assert (outcome.phase, outcome.message, outcome.transient) == (
        "Pending",
        "ConfigMap 'src' (spec.codeFrom) not found",
        False,
    )


def test_a_check_that_could_not_run_is_pending_and_retried() -> None:
    waiting = CheckedCode(None, waiting="checking the code took longer than 15 s", transient=True)
    (outcome,) = decide([plugin("p")], {"p": waiting}, {"p": stored("p")})
    assert (outcome.phase, outcome.transient) == ("Pending", True)
    assert outcome.active is not None and outcome.active.code_hash == code_hash(GOOD)


def test_duplicate_module_the_older_wins() -> None:
    older = plugin("first", created="2026-01-01T00:00:00Z", module="shared")
    newer = plugin("second", created="2026-01-02T00:00:00Z", module="shared")
    outcomes = by_name(decide([older, newer], {"first": valid(), "second": valid(GOOD2)}, {}))
    assert outcomes["first"].phase == "Ready"
    assert outcomes["second"].phase == "Invalid"
    assert "already provided by LunaPlugin 'first'" in outcomes["second"].message
    assert outcomes["second"].active is None and outcomes["second"].stored is None


def test_plugins_being_deleted_leave_the_list() -> None:
    assert decide([plugin("p", deleting=True)], {}, {"p": stored("p")}) == []


# --- one plugin never stops the others --------------------------------------------------------


def test_a_plugin_that_breaks_deciding_is_invalid_alone() -> None:
    """``order`` is an integer in the CRD's schema; an object stored before that rule, or any shape
    we did not foresee, must cost only its own plugin."""
    plugins = [plugin("a"), plugin("hostile", order="first"), plugin("c")]
    outcomes = by_name(decide(plugins, {p.name: valid() for p in plugins}, {}))
    assert outcomes["hostile"].phase == "Invalid"
    assert "could not decide this plugin: ValueError" in outcomes["hostile"].message
    assert (outcomes["a"].phase, outcomes["c"].phase) == ("Ready", "Ready")
    assert outcomes["a"].active is not None and outcomes["c"].active is not None


def test_a_name_too_long_for_a_label_is_invalid_without_a_write() -> None:
    long_name = "p" * 64
    (outcome,) = decide([plugin(long_name, module="p")], {long_name: valid()}, {})
    assert outcome.phase == "Invalid" and "metadata.name is 64 characters; at most 63" in outcome.message
    assert (outcome.stored, outcome.active) == (None, None)


def test_a_configmap_of_someone_else_is_never_overwritten() -> None:
    foreign = ExistingConfigMap(managed=False, owner_uid=None, version=None)
    (outcome,) = decide([plugin("p")], {"p": valid()}, {"p": foreign})
    assert outcome.phase == "Invalid"
    assert "ConfigMap 'lunaplugin-p' exists and was not written by the operator" in outcome.message
    assert (outcome.stored, outcome.active) == (None, None)


def test_messages_are_bounded() -> None:
    (outcome,) = decide([plugin("p")], {"p": CheckedCode("x", (Problem("y" * 100_000),))}, {})
    assert outcome.phase == "Invalid" and len(outcome.message) <= 2000


# --- moving a plugin, renaming its module -------------------------------------------------------


def test_a_plugin_moved_to_another_service_takes_its_configmap_along_with_the_same_code() -> None:
    moved = plugin("p", service="matcher")
    (outcome,) = decide([moved], {"p": valid()}, {"p": stored("p", service="handlers")})
    assert outcome.phase == "Ready"
    assert outcome.stored == StoredVersion("p", GOOD, code_hash(GOOD), "matcher")


def test_a_plugin_moved_with_invalid_code_moves_its_last_good_version() -> None:
    moved = plugin("p", service="matcher")
    (outcome,) = decide([moved], {"p": invalid()}, {"p": stored("p", service="handlers")})
    assert outcome.phase == "Invalid" and "keeps serving" in outcome.message
    assert outcome.stored == StoredVersion("p", GOOD, code_hash(GOOD), "matcher")
    assert outcome.active is not None and outcome.active.code_hash == code_hash(GOOD)


def test_module_rename_with_the_same_code_rewrites_the_configmap_under_the_new_name() -> None:
    (outcome,) = decide([plugin("p", module="renamed")], {"p": valid()}, {"p": stored("p", module="p")})
    assert outcome.phase == "Ready"
    assert outcome.stored == StoredVersion("renamed", GOOD, code_hash(GOOD), "handlers")
    assert outcome.active is not None and outcome.active.module == "renamed"


def test_module_rename_with_invalid_code_keeps_the_old_module_serving() -> None:
    (outcome,) = decide([plugin("p", module="renamed")], {"p": invalid()}, {"p": stored("p", module="p")})
    assert outcome.phase == "Invalid"
    assert "keeps serving as module 'p'" in outcome.message
    assert outcome.stored == StoredVersion("p", GOOD, code_hash(GOOD), "handlers")
    assert outcome.active is not None and (outcome.active.module, outcome.active.code_hash) == (
        "p",
        code_hash(GOOD),
    )
    assert outcome.serving_module == "p"


def test_module_rename_to_a_reserved_name_is_refused_and_the_old_module_keeps_serving() -> None:
    (outcome,) = decide([plugin("p", module="json")], {"p": valid(GOOD2)}, {"p": stored("p", module="p")})
    assert outcome.phase == "Invalid" and "'json' would shadow the module" in outcome.message
    assert outcome.active is not None and outcome.active.module == "p"
    assert outcome.stored is not None and outcome.stored.code == GOOD  # the new code is not written


def test_module_rename_into_a_clash_keeps_the_old_module_serving() -> None:
    older = plugin("a", created="2026-01-01T00:00:00Z", module="shared")
    renamed = plugin("b", created="2026-01-02T00:00:00Z", module="shared")
    outcomes = by_name(decide([older, renamed], {"a": valid(), "b": valid(GOOD2)}, {"b": stored("b")}))
    assert outcomes["a"].active is not None and outcomes["a"].active.module == "shared"
    assert outcomes["b"].phase == "Invalid" and "already provided by LunaPlugin 'a'" in outcomes["b"].message
    assert outcomes["b"].active is not None and outcomes["b"].active.module == "b"


def test_a_last_good_module_claimed_by_another_plugin_stops_serving() -> None:
    """``p`` renamed away from module ``old`` (with broken code), ``q`` now asks for ``old``: q wins."""
    p = plugin("p", created="2026-01-01T00:00:00Z", module="new")
    q = plugin("q", created="2026-01-02T00:00:00Z", module="old")
    outcomes = by_name(decide([p, q], {"p": invalid(), "q": valid(GOOD2)}, {"p": stored("p", module="old")}))
    assert outcomes["p"].active is None and outcomes["p"].phase == "Invalid"
    assert outcomes["q"].active is not None and outcomes["q"].active.module == "old"


def test_a_configmap_of_an_earlier_plugin_of_the_same_name_is_not_its_last_good() -> None:
    (outcome,) = decide([plugin("p")], {"p": invalid()}, {"p": stored("p", uid="uid-of-the-deleted-one")})
    assert (outcome.phase, outcome.active, outcome.stored) == ("Invalid", None, None)
    (outcome,) = decide([plugin("p")], {"p": valid(GOOD2)}, {"p": stored("p", uid="uid-of-the-deleted-one")})
    assert outcome.stored is not None and outcome.stored.code == GOOD2  # taken over


# --- a refused write ------------------------------------------------------------------------------


@pytest.mark.parametrize(("transient", "phase"), [(False, "Invalid"), (True, "Pending")])
def test_a_refused_write_falls_back_to_what_the_configmap_holds(transient: bool, phase: str) -> None:
    (outcome,) = decide([plugin("p")], {"p": valid(GOOD2)}, {"p": stored("p")})
    failed = after_failed_write(outcome, "HTTP 422: refused", stored("p"), set(), transient=transient)
    assert (failed.phase, failed.transient) == (phase, transient)
    assert failed.message.startswith("HTTP 422: refused") and "keeps serving" in failed.message
    assert failed.active is not None and failed.active.code_hash == code_hash(GOOD)


def test_a_refused_first_write_leaves_the_plugin_out() -> None:
    (outcome,) = decide([plugin("p")], {"p": valid()}, {})
    failed = after_failed_write(outcome, "HTTP 422: refused", None, set(), transient=False)
    assert (failed.phase, failed.active) == ("Invalid", None)


def test_a_refused_move_leaves_the_plugin_out_of_its_new_service() -> None:
    (outcome,) = decide([plugin("p", service="matcher")], {"p": valid()}, {"p": stored("p")})
    failed = after_failed_write(outcome, "HTTP 403: forbidden", stored("p"), set(), transient=False)
    assert failed.active is None  # the ConfigMap is still labelled for handlers: matcher cannot see it


# --- rendering ----------------------------------------------------------------------------------


def test_plugin_configmap_is_owned_and_labelled_and_reads_back() -> None:
    body = plugin_configmap(
        plugin="p", uid="u1", service="handlers", module="p", code=GOOD, code_hash=code_hash(GOOD)
    )
    assert body["data"] == {"p.py": GOOD}
    assert body["metadata"]["labels"]["luna.dev/service"] == "handlers"
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "luna-plugins-operator"
    assert body["metadata"]["annotations"] == {"luna.dev/code-hash": code_hash(GOOD)}
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("LunaPlugin", "u1", True)
    assert read_plugin_configmap(body) == ExistingConfigMap(
        True, "u1", StoredVersion("p", GOOD, code_hash(GOOD), "handlers")
    )


def test_a_tampered_configmap_holds_no_version() -> None:
    body = plugin_configmap(
        plugin="p", uid="u1", service="handlers", module="p", code=GOOD, code_hash="0" * 64
    )
    assert read_plugin_configmap(body).version is None
    unlabelled = {"metadata": {"name": "lunaplugin-p"}, "data": {"p.py": GOOD}}
    assert read_plugin_configmap(unlabelled) == ExistingConfigMap(False, None, None)


def test_the_active_list_is_owned_by_the_plugins_and_the_sidecars_of_the_service() -> None:
    owners = [
        ("LunaPlugin", "b", "uid-b"),
        ("LunaPluginRuntime", "pod-a-handlers", "uid-r"),
        ("LunaPlugin", "a", "uid-a"),
    ]
    references = active_list("handlers", [], owners)["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in references] == sorted(owners)
    assert {o["apiVersion"] for o in references} == {"luna.dev/v1alpha1"}
    assert not any(o.get("controller") for o in references)


# --- what a plugin asks for ---------------------------------------------------------------------


def test_the_intent_ignores_status_and_metadata_and_starts_with_the_service() -> None:
    record = PluginRecord("ns", "p", "uid-p", 1, "t0", False, {"service": "handlers", "code": "x"})
    written = PluginRecord("ns", "p", "uid-p", 1, "t0", False, dict(record.spec), {"phase": "Ready"})
    assert written.intent() == record.intent() and record.intent()[0] == "handlers"
    for changed in (
        PluginRecord("ns", "p", "uid-p", 2, "t0", False, {"service": "handlers", "code": "y"}),
        PluginRecord("ns", "p", "uid-p", 2, "t0", True, {"service": "handlers", "code": "y"}),
        PluginRecord("ns", "p", "uid-q", 1, "t1", False, {"service": "handlers", "code": "y"}),
        PluginRecord("ns", "p", "uid-p", 1, "t0", False, {"service": "matcher", "code": "x"}),
    ):
        assert changed.intent() != record.intent(), changed


# --- settings -----------------------------------------------------------------------------------


def test_settings_too_large_are_invalid_and_the_version_in_service_keeps_its_settings() -> None:
    big = {"blob": "x" * 70_000}
    listed = {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {"a": 1})}
    (outcome,) = decide([plugin("p", settings=big)], {"p": valid(GOOD2)}, {"p": stored("p")}, listed)
    assert (
        outcome.phase == "Invalid"
        and "spec.settings is 70011 bytes as JSON; the limit is 65536" in outcome.message
    )
    assert outcome.active is not None and dict(outcome.active.settings) == {"a": 1}
    assert outcome.active.code_hash == code_hash(GOOD)  # the new code waits for valid settings
    (outcome,) = decide([plugin("p", settings=big)], {"p": valid()}, {})
    assert (outcome.phase, outcome.active) == ("Invalid", None)


def test_settings_that_are_not_an_object_are_invalid() -> None:
    (outcome,) = decide([plugin("p", settings=["a"])], {"p": valid()}, {})
    assert outcome.phase == "Invalid" and "spec.settings must be an object, not list" in outcome.message


def test_the_active_list_stays_within_a_configmap_newest_plugins_out_first() -> None:
    settings = {"blob": "x" * 60_000}  # under the per-plugin limit, but 16 of them do not fit
    plugins = [
        plugin(f"p{index:02d}", created=f"2026-01-01T00:00:{index:02d}Z", settings=settings)
        for index in range(20)
    ]
    outcomes = decide(plugins, {p.name: valid() for p in plugins}, {})
    listed = [o.plugin.name for o in outcomes if o.active is not None]
    assert listed == [f"p{index:02d}" for index in range(15)]
    refused = by_name(outcomes)["p15"]
    assert (
        refused.phase == "Invalid" and "the active list of service 'handlers' would exceed" in refused.message
    )
    rendered = active_list("handlers", [o.active for o in outcomes if o.active])
    assert sum(len(key) + len(value) for key, value in rendered["data"].items()) < 1024 * 1024


# --- requirements -------------------------------------------------------------------------------


def test_requirements_go_into_the_entry_in_canonical_spelling() -> None:
    (outcome,) = decide([plugin("p", requirements=["Redis>=5,<6"])], {"p": valid()}, {})
    assert outcome.phase == "Ready" and outcome.active is not None
    assert outcome.active.requirements == ("Redis<6,>=5",)


def test_requirements_that_are_not_from_the_index_are_invalid_and_the_version_in_service_keeps_its_own() -> (
    None
):
    record = plugin("p", requirements=["evil @ https://attacker.invalid/evil.whl"])
    listed = {"p": ActiveEntry("p", code_hash(GOOD), "lunaplugin-p", "p", {}, ("redis==5.0.8",))}
    (outcome,) = decide([record], {"p": valid(GOOD2)}, {"p": stored("p")}, listed)
    assert (
        outcome.phase == "Invalid" and "spec.requirements[0]" in outcome.message and "URL" in outcome.message
    )
    assert outcome.active is not None and outcome.active.code_hash == code_hash(GOOD)
    assert outcome.active.requirements == ("redis==5.0.8",)

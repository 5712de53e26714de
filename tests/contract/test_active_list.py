"""The active list's one entry type, encoder and strict decoder: what the operator writes passes
and reads back the same, anything else is refused with a message naming the ConfigMap, key and
entry."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from luna_contract.active_list import (
    ActiveEntry,
    ActiveListError,
    Canary,
    code_of,
    encode_active_list,
)
from luna_contract.active_list import decode_active_list as parse_active_list
from luna_contract.names import PLUGINS_KEY, active_list_key

KEY = active_list_key("handlers")
HASH = hashlib.sha256(b"code").hexdigest()
GOOD_ENTRY = {"codeHash": HASH, "configMap": "lunaplugin-hello", "plugin": "hello", "settings": {"a": 1}}


def data(modules: Any, details: Any) -> dict[str, str]:
    return {
        KEY: modules if isinstance(modules, str) else json.dumps(modules),
        PLUGINS_KEY: details if isinstance(details, str) else json.dumps(details),
    }


def test_what_the_operator_writes_is_accepted_in_order() -> None:
    entries = parse_active_list(
        "luna-plugins-handlers",
        data(
            ["hello", "digest"], {"hello": GOOD_ENTRY, "digest": GOOD_ENTRY | {"configMap": "lunaplugin-d"}}
        ),
        "handlers",
    )
    assert entries == [
        ActiveEntry("hello", HASH, "lunaplugin-hello", "hello", {"a": 1}, order=0),
        ActiveEntry("digest", HASH, "lunaplugin-d", "hello", {"a": 1}, order=1),
    ]


def test_an_empty_list_means_no_plugins() -> None:
    assert parse_active_list("cm", {KEY: "[]"}, "handlers") == []
    assert parse_active_list("cm", data([], {}), "handlers") == []


def test_missing_settings_are_empty() -> None:
    entry = {"codeHash": HASH, "configMap": "lunaplugin-hello"}
    assert parse_active_list("cm", data(["hello"], {"hello": entry}), "handlers")[0].settings == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, f"ConfigMap cm has no key {KEY}"),
        ({KEY: "[oops"}, f"key {KEY}: not valid JSON"),
        ({KEY: "[" * 100_000}, f"key {KEY}: not valid JSON"),
        ({KEY: '"hello"'}, f"key {KEY}: expected a JSON list of module names, got a string ('hello')"),
        ({KEY: '{"hello": 1}'}, "expected a JSON list of module names, got an object"),
        ({KEY: '[{"module": "hello"}]'}, f"key {KEY}[0]: expected a module name, got an object"),
        ({KEY: '["hello", 3]'}, f"key {KEY}[1]: expected a module name, got a int"),
        ({KEY: '["json"]'}, "'json' would shadow the module of that name"),
        ({KEY: '["../etc"]'}, "is not a Python module name"),
        ({KEY: '["a", "a"]'}, "'a' is listed twice"),
        ({KEY: '["hello"]'}, f"ConfigMap cm has no key {PLUGINS_KEY}"),
        (data(["hello"], "[]"), f"key {PLUGINS_KEY}: expected a JSON object, got a list"),
        (data(["hello"], "nope"), f"key {PLUGINS_KEY}: not valid JSON"),
        (data(["hello"], {}), "entry 'hello': missing"),
        (data(["hello"], {"hello": "x"}), "entry 'hello': expected an object, got a string"),
        (data(["hello"], {"hello": GOOD_ENTRY | {"codeHash": "abc"}}), "codeHash must be a SHA-256"),
        (data(["hello"], {"hello": GOOD_ENTRY | {"codeHash": HASH.upper()}}), "codeHash must be a SHA-256"),
        (
            data(["hello"], {"hello": GOOD_ENTRY | {"configMap": "../x"}}),
            "configMap must be a ConfigMap name",
        ),
        (data(["hello"], {"hello": GOOD_ENTRY | {"configMap": 7}}), "configMap must be a ConfigMap name"),
        (
            data(["hello"], {"hello": GOOD_ENTRY | {"settings": [1]}}),
            "settings must be an object, got a list",
        ),
    ],
)
def test_anything_else_is_refused_with_where_and_what(given: dict[str, str], message: str) -> None:
    with pytest.raises(ActiveListError) as caught:
        parse_active_list("cm", given, "handlers")
    assert message in str(caught.value)
    assert str(caught.value).startswith("ConfigMap cm")


def test_code_is_taken_only_when_its_hash_is_the_one_named() -> None:
    entry = ActiveEntry("hello", HASH, "lunaplugin-hello")
    assert code_of(entry, {"hello.py": "code"}) == (b"code", None)
    assert code_of(entry, {"hello.py": "other code"})[0] is None
    assert "holds code" in str(code_of(entry, {"hello.py": "other code"})[1])
    assert code_of(entry, {"other.py": "code"}) == (None, "ConfigMap lunaplugin-hello has no key hello.py")
    assert code_of(entry, None) == (None, "ConfigMap lunaplugin-hello not found")


def test_what_the_encoder_writes_the_decoder_reads_back_the_same() -> None:
    entries = [
        ActiveEntry("b", HASH, "lunaplugin-b", "b-plugin", {"k": [1, 2]}, ("redis==5.0.8",), HASH, order=0),
        ActiveEntry("a", HASH, "lunaplugin-a", "a", order=0),
        ActiveEntry("z", HASH, "lunaplugin-z", None, order=-1),
    ]
    data_ = encode_active_list("handlers", entries)
    decoded = parse_active_list("cm", data_, "handlers")
    assert [entry.module for entry in decoded] == ["z", "a", "b"]  # by (order, module)
    by_module = {entry.module: entry for entry in decoded}
    for entry in entries:
        got = by_module[entry.module]
        assert (got.code_hash, got.config_map, got.plugin, dict(got.settings)) == (
            entry.code_hash,
            entry.config_map,
            entry.plugin,
            dict(entry.settings),
        )
        assert (got.requirements, got.secret_settings_hash) == (
            entry.requirements,
            entry.secret_settings_hash,
        )
    assert encode_active_list("handlers", reversed(entries)) == data_  # the same bytes in any order


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("plugin", "../x", "plugin must be a LunaPlugin name"),
        ("plugin", ["x"], "plugin must be a LunaPlugin name"),
        ("secretSettingsHash", "abc", "secretSettingsHash must be a SHA-256"),
        ("requirements", ["evil @ https://attacker.invalid/e.whl"], "requirements"),
        ("canary", "all", "canary: expected an object"),
        ("canary", {"codeHash": "abc", "configMap": "x"}, "canary: codeHash must be a SHA-256"),
        ("canary", {"codeHash": HASH, "configMap": "../x"}, "canary: configMap must be a ConfigMap name"),
        ("canary", {"codeHash": HASH, "configMap": "x", "pods": "p-1"}, "canary: pods must be a list"),
        ("canary", {"codeHash": HASH, "configMap": "x", "pods": ["p-1", "../p"]}, "canary: pods[1]"),
        ("canary", {"codeHash": HASH, "configMap": "x", "pods": [7]}, "canary: pods[0]"),
        ("canary", {"codeHash": HASH, "configMap": "x", "pods": ["p"] * 5001}, "at most 5000"),
    ],
)
def test_hostile_optional_fields_are_refused_naming_them(field: str, value: Any, message: str) -> None:
    given = data(["hello"], {"hello": GOOD_ENTRY | {field: value}})
    with pytest.raises(ActiveListError) as caught:
        parse_active_list("cm", given, "handlers")
    assert message in str(caught.value) and "entry 'hello'" in str(caught.value)


def test_a_canary_reads_back_and_each_pod_gets_its_version() -> None:
    other = hashlib.sha256(b"v2").hexdigest()
    entry = ActiveEntry(
        "a", HASH, "lunaplugin-a", "a", canary=Canary(other, "lunaplugin-a-canary", ("p-2", "p-1"))
    )
    (decoded,) = parse_active_list("cm", encode_active_list("handlers", [entry]), "handlers")
    assert decoded.canary == Canary(other, "lunaplugin-a-canary", ("p-1", "p-2"))
    on_canary = decoded.for_pod("p-2")
    assert (on_canary.code_hash, on_canary.config_map, on_canary.canary) == (
        other,
        "lunaplugin-a-canary",
        None,
    )
    for pod in ("p-3", "p", None):
        stable = decoded.for_pod(pod)
        assert (stable.code_hash, stable.config_map, stable.canary) == (HASH, "lunaplugin-a", None)
    plain = ActiveEntry("a", HASH, "lunaplugin-a")
    assert plain.for_pod("p-1") is plain
    assert "canary" not in json.loads(encode_active_list("handlers", [plain])[PLUGINS_KEY])["a"]

"""``spec.isolation``: ``inProcess`` (the default) or ``process``, through the CRD's schema, the
operator's view and the active list to the sidecar. Other values are refused at every step, naming
the field; an entry of the default is written as older sidecars know it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from luna_contract.active_list import (
    ActiveEntry,
    ActiveListError,
    Canary,
    decode_active_list,
    encode_active_list,
)
from luna_contract.crd_schema import spec_schema
from luna_contract.names import PLUGINS_KEY, active_list_key
from luna_contract.spec import IN_PROCESS, ISOLATIONS, PROCESS, SpecError, SpecView, read_spec

HASH = hashlib.sha256(b"code").hexdigest()
CANARY_HASH = hashlib.sha256(b"new code").hexdigest()
KEY = active_list_key("handlers")

#: values of spec.isolation that are not one of its two (case, spelling, type, shape)
HOSTILE: list[Any] = ["Process", "in-process", "inprocess", "process ", "", "thread", 1, True, None, [], {}]


def test_the_default_is_in_process_and_process_is_taken() -> None:
    assert ISOLATIONS == ("inProcess", "process")
    assert read_spec({"code": "x"}).isolation == IN_PROCESS
    assert read_spec({"code": "x", "isolation": "process"}).isolation == PROCESS
    assert read_spec({"code": "x", "isolation": "inProcess"}).isolation == IN_PROCESS


@pytest.mark.parametrize("isolation", HOSTILE)
def test_another_value_is_refused_by_the_spec_naming_the_field(isolation: Any) -> None:
    with pytest.raises(SpecError) as caught:
        read_spec({"code": "x", "isolation": isolation})
    assert "spec.isolation" in str(caught.value)


@pytest.mark.parametrize("isolation", HOSTILE)
def test_the_operators_view_falls_back_to_the_default_and_names_the_problem(isolation: Any) -> None:
    view = SpecView({"isolation": isolation})
    assert view.isolation == IN_PROCESS  # never raises, never passes the value on
    problem = view.isolation_problem()
    assert problem is not None and problem.startswith("spec.isolation must be one of inProcess, process")


def test_the_view_of_an_unset_or_valid_isolation() -> None:
    assert SpecView({}).isolation == IN_PROCESS and SpecView({}).isolation_problem() is None
    for value in ISOLATIONS:
        assert SpecView({"isolation": value}).isolation == value
        assert SpecView({"isolation": value}).isolation_problem() is None


def test_the_crd_schema_is_an_enum_with_the_default() -> None:
    schema = spec_schema()["properties"]["isolation"]
    assert (schema["type"], schema["enum"], schema["default"]) == (
        "string",
        ["inProcess", "process"],
        "inProcess",
    )
    assert "isolation" not in spec_schema().get("required", [])


def _entry(isolation: Any = IN_PROCESS, **fields: Any) -> ActiveEntry:
    return ActiveEntry("hello", HASH, "lunaplugin-hello", "hello", isolation=isolation, **fields)


def test_the_active_list_carries_process_and_leaves_the_default_out() -> None:
    data = encode_active_list("handlers", [_entry(PROCESS), ActiveEntry("plain", HASH, "lunaplugin-plain")])
    details = json.loads(data[PLUGINS_KEY])
    assert details["hello"]["isolation"] == "process"
    assert "isolation" not in details["plain"]  # older sidecars see the lists they know
    decoded = {entry.module: entry for entry in decode_active_list("cm", data, "handlers")}
    assert decoded["hello"].isolation == PROCESS and decoded["plain"].isolation == IN_PROCESS
    assert decoded["hello"] == _entry(PROCESS)  # the whole entry round-trips


def test_an_explicit_in_process_on_the_wire_is_read() -> None:
    entry = json.dumps({"codeHash": HASH, "configMap": "lunaplugin-hello", "isolation": "inProcess"})
    (decoded,) = decode_active_list(
        "cm", {KEY: '["hello"]', PLUGINS_KEY: '{"hello": ' + entry + "}"}, "handlers"
    )
    assert decoded.isolation == IN_PROCESS


def _listed(isolation_json: str) -> dict[str, str]:
    entry = json.dumps({"codeHash": HASH, "configMap": "lunaplugin-hello"})
    return {
        KEY: '["hello"]',
        PLUGINS_KEY: '{"hello": ' + entry[:-1] + ', "isolation": ' + isolation_json + "}}",
    }


@pytest.mark.parametrize("isolation", HOSTILE)
def test_another_value_in_the_active_list_is_refused_naming_the_entry(isolation: Any) -> None:
    with pytest.raises(ActiveListError) as caught:
        decode_active_list("luna-plugins-handlers", _listed(json.dumps(isolation)), "handlers")
    message = str(caught.value)
    assert "entry 'hello'" in message and "isolation must be one of inProcess, process" in message


@pytest.mark.parametrize(
    "isolation_json", ['"process\\u0000"', '"PROCESS"', "NaN", '["process"]', '{"mode": "process"}']
)
def test_lookalikes_json_allows_are_refused(isolation_json: str) -> None:
    """A variation: a value that reads like ``process`` to a person, or a shape holding it."""
    with pytest.raises(ActiveListError) as caught:
        decode_active_list("cm", _listed(isolation_json), "handlers")
    assert "entry 'hello'" in str(caught.value)


def test_a_canary_runs_with_the_entrys_isolation_on_its_pods_and_elsewhere() -> None:
    entry = _entry(PROCESS, canary=Canary(CANARY_HASH, "lunacanary-hello", ("pod-a",)))
    (decoded,) = decode_active_list("cm", encode_active_list("handlers", [entry]), "handlers")
    on_canary, elsewhere = decoded.for_pod("pod-a"), decoded.for_pod("pod-b")
    assert (on_canary.code_hash, on_canary.isolation) == (CANARY_HASH, PROCESS)
    assert (elsewhere.code_hash, elsewhere.isolation) == (HASH, PROCESS)

"""``spec.delivery``: the LunaPlugin carries a :class:`DeliveryPolicy` unchanged, through the CRD's
schema, the operator's view and the active list, to the sidecar. Hostile values are refused at
every step, naming the field."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from luna_contract.active_list import ActiveEntry, ActiveListError, decode_active_list, encode_active_list
from luna_contract.crd_schema import spec_schema
from luna_contract.delivery import BreakerPolicy, DeliveryPolicy, RetryPolicy
from luna_contract.names import PLUGINS_KEY, active_list_key
from luna_contract.spec import SpecError, SpecView, read_spec

HASH = hashlib.sha256(b"code").hexdigest()
KEY = active_list_key("handlers")

#: hostile or merely wrong values of spec.delivery, and the field the refusal must name
HOSTILE: list[tuple[Any, str]] = [
    ({"mode": "exactly-once"}, "delivery.mode"),
    ({"mode": 1}, "delivery.mode"),
    ({"maxQueueBytes": 1}, "delivery.maxQueueBytes"),
    ({"maxQueueBytes": 2**62}, "delivery.maxQueueBytes"),
    ({"maxQueueBytes": "1Gi"}, "delivery.maxQueueBytes"),
    ({"maxQueueBytes": True}, "delivery.maxQueueBytes"),
    ({"maxDeadLetterBytes": 1023}, "delivery.maxDeadLetterBytes"),
    ({"maxDeadLetterBytes": -(2**70)}, "delivery.maxDeadLetterBytes"),
    ({"maxDeadLetterBytes": 1.5e6}, "delivery.maxDeadLetterBytes"),
    ({"whenFull": "block"}, "delivery.whenFull"),
    ({"retry": "fast"}, "delivery.retry"),
    ({"retry": {"initialBackoff": 0}}, "delivery.retry.initialBackoff"),
    ({"retry": {"maxBackoff": -1}}, "delivery.retry.maxBackoff"),
    ({"retry": {"maxElapsed": 1e300}}, "delivery.retry.maxElapsed"),
    ({"retry": {"maxRetryAfter": 86_401}}, "delivery.retry.maxRetryAfter"),
    ({"breaker": {"failures": 0}}, "delivery.breaker.failures"),
    ({"breaker": {"failures": 2.5}}, "delivery.breaker.failures"),
    ({"breaker": {"openSeconds": "30s"}}, "delivery.breaker.openSeconds"),
    ([], "delivery"),
    ("at-least-once", "delivery"),
]


def test_a_spec_with_delivery_decodes_with_the_policys_own_defaults() -> None:
    spec = read_spec({"code": "x", "delivery": {"mode": "at-least-once", "retry": {"maxElapsed": 0}}})
    assert spec.delivery == DeliveryPolicy(mode="at-least-once", retry=RetryPolicy(max_elapsed=0))
    assert spec.delivery.durable and spec.delivery.max_queue_bytes == 256 * 1024 * 1024
    assert read_spec({"code": "x"}).delivery is None


@pytest.mark.parametrize(("delivery", "where"), HOSTILE)
def test_a_hostile_delivery_is_refused_by_the_spec_naming_the_field(delivery: Any, where: str) -> None:
    with pytest.raises(SpecError) as caught:
        read_spec({"code": "x", "delivery": delivery})
    assert f"spec.{where}" in str(caught.value)


@pytest.mark.parametrize(("delivery", "where"), HOSTILE)
def test_the_operators_view_names_the_problem_and_never_raises(delivery: Any, where: str) -> None:
    view = SpecView({"delivery": delivery})
    assert view.delivery is None
    problem = view.delivery_problem()
    assert problem is not None and f"spec.{where}" in problem


def test_the_view_of_an_unset_or_valid_delivery() -> None:
    assert SpecView({}).delivery is None and SpecView({}).delivery_problem() is None
    view = SpecView({"delivery": {"mode": "at-least-once", "breaker": {"failures": 3}}})
    assert view.delivery == DeliveryPolicy(mode="at-least-once", breaker=BreakerPolicy(failures=3))
    assert view.delivery_problem() is None
    assert SpecView({"delivery": None}).delivery_problem() == "spec.delivery: Expected `object`, got `null`"


def test_the_crd_schema_bounds_what_the_policy_bounds() -> None:
    delivery = spec_schema()["properties"]["delivery"]
    assert delivery["properties"]["mode"]["enum"] == ["at-least-once", "at-most-once"]
    assert delivery["properties"]["whenFull"]["enum"] == ["dropNewest", "dropOldest", "refuse"]
    backoff = delivery["properties"]["retry"]["properties"]["initialBackoff"]
    assert (backoff["type"], backoff["minimum"], backoff["exclusiveMinimum"]) == ("number", 0, True)
    # whole defaults as integers: the API server returns 30.0 as 30, the fingerprint must agree
    assert delivery["properties"]["breaker"]["properties"]["openSeconds"]["default"] == 30
    assert isinstance(delivery["properties"]["breaker"]["properties"]["openSeconds"]["default"], int)


def _entry(delivery: DeliveryPolicy | None) -> ActiveEntry:
    return ActiveEntry("hello", HASH, "lunaplugin-hello", "hello", delivery=delivery)


def test_the_active_list_carries_the_policy_only_when_set() -> None:
    policy = DeliveryPolicy(mode="at-least-once", max_queue_bytes=8 * 1024 * 1024, when_full="dropOldest")
    data = encode_active_list("handlers", [_entry(policy), ActiveEntry("plain", HASH, "lunaplugin-plain")])
    details = json.loads(data[PLUGINS_KEY])
    assert "delivery" not in details["plain"]  # older sidecars see the lists they know
    assert details["hello"]["delivery"] == {
        "mode": "at-least-once",
        "maxQueueBytes": 8 * 1024 * 1024,
        "whenFull": "dropOldest",
    }
    decoded = {entry.module: entry for entry in decode_active_list("cm", data, "handlers")}
    assert decoded["hello"].delivery == policy and decoded["plain"].delivery is None


def test_an_explicit_at_most_once_stays_explicit_on_the_wire() -> None:
    data = encode_active_list("handlers", [_entry(DeliveryPolicy())])
    assert json.loads(data[PLUGINS_KEY])["hello"]["delivery"] == {}
    assert decode_active_list("cm", data, "handlers")[0].delivery == DeliveryPolicy()


def _listed(delivery_json: str) -> dict[str, str]:
    entry = json.dumps({"codeHash": HASH, "configMap": "lunaplugin-hello"})
    return {
        KEY: '["hello"]',
        PLUGINS_KEY: '{"hello": ' + entry[:-1] + ', "delivery": ' + delivery_json + "}}",
    }


@pytest.mark.parametrize(("delivery", "where"), HOSTILE)
def test_a_hostile_delivery_in_the_active_list_is_refused_naming_the_entry(delivery: Any, where: str) -> None:
    with pytest.raises(ActiveListError) as caught:
        decode_active_list("luna-plugins-handlers", _listed(json.dumps(delivery)), "handlers")
    message = str(caught.value)
    assert "entry 'hello'" in message and "delivery" in message


@pytest.mark.parametrize(
    "delivery_json",
    [
        '{"retry": {"initialBackoff": NaN}}',
        '{"retry": {"maxBackoff": Infinity}}',
        '{"breaker": {"openSeconds": -Infinity}}',
        '{"maxQueueBytes": 1e400}',
        '{"maxQueueBytes": ' + "[" * 50 + "]" * 50 + "}",
    ],
)
def test_numbers_json_allows_but_the_policy_does_not_are_refused(delivery_json: str) -> None:
    """A variation: what Python's JSON reader accepts beyond JSON (NaN, infinities) or a value
    nested where an object of numbers is expected."""
    with pytest.raises(ActiveListError) as caught:
        decode_active_list("cm", _listed(delivery_json), "handlers")
    assert "entry 'hello'" in str(caught.value)


def test_unknown_keys_of_a_newer_policy_are_ignored() -> None:
    entries = decode_active_list("cm", _listed('{"mode": "at-least-once", "fromTheFuture": 1}'), "handlers")
    assert entries[0].delivery == DeliveryPolicy(mode="at-least-once")

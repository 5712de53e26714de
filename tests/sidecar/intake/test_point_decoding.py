"""The fast monitoring decoder gives every body exactly the reference path's answer.

The reference is ``payloads.parse_points`` over the strict JSON parser (``decode_json``): same
points (values of the same types) for a body it accepts, same status and message (with the JSON
path of the offending element) for a body it refuses.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
from typing import Any

import pytest

from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict
from luna_sidecar.intake.payloads import PayloadError, decode_json, parse_points
from luna_sidecar.intake.point_decoding import PointDecoder
from tests.support.intake_bodies import monitoring_bodies

MAX_ITEMS = 5


def _typed(values: Any) -> list[tuple[str, str, str]]:
    return sorted((key, type(value).__name__, repr(value)) for key, value in values.items())


def outcome(decode: Any, raw: bytes) -> tuple[Any, ...]:
    """What a decoder makes of ``raw``: the points with the type of every value, or the refusal."""
    try:
        points = decode(raw)
    except PayloadError as exc:
        return ("refused", exc.status, exc.message)
    return (
        "accepted",
        [(point.series, repr(point.eventTime), _typed(point.tags), _typed(point.fields)) for point in points],
    )


def reference(raw: bytes, max_items: int = MAX_ITEMS) -> list[MonitoringPoint]:
    return parse_points(decode_json(raw), max_items=max_items)


@pytest.fixture
def decoder() -> PointDecoder:
    return PointDecoder(max_items=MAX_ITEMS)


def _point(**overrides: Any) -> dict[str, Any]:
    point: dict[str, Any] = {
        "series": "requests",
        "eventTime": 1_700_000_000,
        "tags": {"service": "handlers", "route": "POST:/x", "status_code": 200},
        "fields": {"request_id": "r1", "execution_time": 0.02, "ok": True},
    }
    point.update(overrides)
    return point


def _body(*points: Any, **top: Any) -> bytes:
    return json.dumps({"points": list(points), **top}).encode()


def test_a_batch_becomes_read_only_points(decoder: PointDecoder) -> None:
    [point] = decoder.decode(_body(_point(extra="ignored")))
    assert point == MonitoringPoint(
        "requests",
        1_700_000_000.0,
        {"service": "handlers", "route": "POST:/x", "status_code": 200},
        {"request_id": "r1", "execution_time": 0.02, "ok": True},
    )
    assert type(point.eventTime) is float
    assert type(point.tags) is ReadOnlyDict and type(point.fields) is ReadOnlyDict
    assert outcome(decoder.decode, _body(_point())) == outcome(reference, _body(_point()))


def test_missing_tags_and_fields_are_empty(decoder: PointDecoder) -> None:
    [point] = decoder.decode(_body({"series": "x", "eventTime": 1.5}))
    assert (point.tags, point.fields) == ({}, {})
    assert type(point.tags) is ReadOnlyDict


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"[1, 2]", 422, "body must be a JSON object with a 'points' list, got array"),
        (b"{}", 422, "points: required, must be an array, got null"),
        (
            _body(*[_point()] * (MAX_ITEMS + 1)),
            413,
            "points: 6 items is more than the limit of 5 per request",
        ),
        (_body(1), 422, "points[0]: must be an object, got number"),
        (_body(_point(series="")), 422, "points[0].series: required, a non-empty string"),
        (_body(_point(), _point(eventTime="now")), 422, "points[1].eventTime: required, UNIX seconds"),
        (_body(_point(eventTime=True)), 422, "points[0].eventTime: required, UNIX seconds as a number"),
        (b'{"points": [{"series": "s", "eventTime": NaN}]}', 400, "body is not valid JSON"),
        (b'{"points": [{"series": "s", "eventTime": 1e999}]}', 400, "body is not valid JSON"),
        (_body(_point(), _point(tags=[])), 422, "points[1].tags: must be an object of strings or numbers"),
        (
            _body(_point(tags={"route": True})),
            422,
            "points[0].tags.route: must be strings or numbers, got boolean",
        ),
        (_body(_point(tags={"x": None})), 422, "points[0].tags.x: must be strings or numbers, got null"),
        (
            _body(_point(fields={"nested": {"a": 1}})),
            422,
            "points[0].fields.nested: must be strings, numbers or booleans, got object",
        ),
        (
            _body(_point(fields={"l": [1]})),
            422,
            "points[0].fields.l: must be strings, numbers or booleans, got array",
        ),
        (b'{"points": [{"series": "\\ud800", "eventTime": 1}]}', 400, "body is not valid JSON"),
        (b'\xef\xbb\xbf{"points": []}', 400, "body is not valid JSON"),
    ],
)
def test_refusals_are_the_reference_ones_with_their_path(
    decoder: PointDecoder, raw: bytes, status: int, message: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        decoder.decode(raw)
    assert caught.value.status == status
    assert caught.value.message.startswith(message)
    assert outcome(decoder.decode, raw) == outcome(reference, raw)


@pytest.mark.parametrize(
    "raw",
    [
        _body(_point(tags=None, fields=None)),  # null tags: msgspec refuses, the reference accepts
        _body(_point(tags={"big": 10**30})),  # beyond 64 bits: the JSON parser makes it a float
        _body(_point(tags={"u64": 2**64 - 1})),
        _body(_point(fields={"small": -(2**63) - 1})),
        _body(_point(eventTime=10**30)),
        b'{"points": [{"series": "s", "eventTime": 1, "tags": {"a": 1, "a": "x"}}]}',  # last one wins
        b'{"points": [{"series": "s", "eventTime": 1}], "points": []}',
        b'{"points": [{"series": "s", "eventTime": -0}]}',
    ],
)
def test_corner_cases_agree_with_the_reference(decoder: PointDecoder, raw: bytes) -> None:
    assert outcome(decoder.decode, raw) == outcome(reference, raw)
    assert outcome(decoder.decode, raw)[0] == "accepted"


def test_the_bound_is_inclusive(decoder: PointDecoder) -> None:
    assert len(decoder.decode(_body(*[_point()] * MAX_ITEMS))) == MAX_ITEMS


def test_random_and_malformed_bodies_get_the_reference_answer(decoder: PointDecoder) -> None:
    rng = random.Random(12)
    kinds: dict[str, int] = {}
    for raw in monitoring_bodies(rng, 3000):
        mine, theirs = outcome(decoder.decode, raw), outcome(reference, raw)
        assert mine == theirs, f"body {raw[:300]!r}"
        key = str(mine[1]) if mine[0] == "refused" else "accepted"
        kinds[key] = kinds.get(key, 0) + 1
    # the generator reaches every answer the intake gives
    assert {"accepted", "400", "413", "422"} <= set(kinds), kinds
    assert min(kinds.values()) >= 30, kinds


# -- shared, read-only points -----------------------------------------------------------------------


def test_points_cannot_be_changed(decoder: PointDecoder) -> None:
    [point] = decoder.decode(_body(_point()))
    with pytest.raises(AttributeError):
        point.series = "other"  # type: ignore[misc]
    for change in (
        lambda: point.tags.__setitem__("route", "x"),
        lambda: point.tags.__delitem__("route"),
        lambda: point.tags.pop("route"),
        lambda: point.tags.popitem(),
        lambda: point.tags.setdefault("new", 1),
        lambda: point.tags.update(route="x"),
        lambda: point.fields.clear(),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change()
    with pytest.raises(TypeError):
        point.tags |= {"x": 1}  # type: ignore[misc]
    assert point.tags["route"] == "POST:/x" and len(point.fields) == 3


def test_read_only_values_read_like_a_dict(decoder: PointDecoder) -> None:
    [point] = decoder.decode(_body(_point()))
    assert isinstance(point.tags, dict)
    assert json.loads(json.dumps({"tags": point.tags})) == {"tags": dict(point.tags)}
    changeable = point.tags.copy()
    changeable["route"] = "changed"
    assert type(changeable) is dict and point.tags["route"] == "POST:/x"
    assert type(point.tags | {"x": 1}) is dict
    for clone in (copy.copy(point), copy.deepcopy(point), pickle.loads(pickle.dumps(point))):
        assert clone == point and type(clone.tags) is ReadOnlyDict
    assert point.asDict()["tags"] == dict(point.tags) and type(point.asDict()["tags"]) is dict

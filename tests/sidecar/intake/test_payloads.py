"""Validation of event-intake bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from luna_plugins.handler_event.base_plugin import Event, RawEvent
from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.intake.payloads import PayloadError, parse_points, parse_sending


def _point(**overrides: Any) -> dict[str, Any]:
    point: dict[str, Any] = {
        "series": "requests",
        "eventTime": 1_700_000_000,
        "tags": {"service": "handlers", "route": "POST:/x", "status_code": 200},
        "fields": {"request_id": "r1", "execution_time": 0.02, "ok": True},
    }
    point.update(overrides)
    return point


def _refused(body: Any, status: int = 422, *, max_items: int = 100) -> str:
    with pytest.raises(PayloadError) as caught:
        parse_points(body, max_items=max_items)
    assert caught.value.status == status
    assert str(caught.value) == caught.value.message
    return caught.value.message


def test_points_are_built() -> None:
    [point] = parse_points({"points": [_point(extra="ignored")]}, max_items=10)
    assert isinstance(point, MonitoringPoint)
    assert point.series == "requests"
    assert point.eventTime == 1_700_000_000.0
    assert isinstance(point.eventTime, float)
    assert point.tags == {"service": "handlers", "route": "POST:/x", "status_code": 200}
    assert point.fields == {"request_id": "r1", "execution_time": 0.02, "ok": True}


def test_tags_and_fields_are_optional() -> None:
    [point] = parse_points({"points": [{"series": "x", "eventTime": 1.5, "tags": None}]}, max_items=1)
    assert (point.tags, point.fields) == ({}, {})


def test_empty_points_list_is_fine() -> None:
    assert parse_points({"points": []}, max_items=1) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body must be a JSON object with a 'points' list, got array"),
        ({}, "points: required, must be an array, got null"),
        ({"points": {}}, "points: required, must be an array, got object"),
        ({"points": [1]}, "points[0]: must be an object, got number"),
        ({"points": [_point(series="")]}, "points[0].series: required, a non-empty string"),
        ({"points": [_point(series=5)]}, "points[0].series: required, a non-empty string"),
        (
            {"points": [_point(eventTime="now")]},
            "points[0].eventTime: required, UNIX seconds as a number, got string",
        ),
        (
            {"points": [_point(eventTime=True)]},
            "points[0].eventTime: required, UNIX seconds as a number, got boolean",
        ),
        ({"points": [_point(eventTime=float("nan"))]}, "points[0].eventTime: must be a finite number"),
        ({"points": [_point(), _point(tags=[])]}, "points[1].tags: must be an object of strings or numbers"),
        (
            {"points": [_point(tags={"route": True})]},
            "points[0].tags.route: must be strings or numbers, got boolean",
        ),
        ({"points": [_point(tags={"x": None})]}, "points[0].tags.x: must be strings or numbers, got null"),
        ({"points": [_point(tags={"x": float("inf")})]}, "points[0].tags.x: must be a finite number"),
        (
            {"points": [_point(fields={"nested": {"a": 1}})]},
            "points[0].fields.nested: must be strings, numbers or booleans, got object",
        ),
        (
            {"points": [_point(fields={"l": [1]})]},
            "points[0].fields.l: must be strings, numbers or booleans, got array",
        ),
    ],
)
def test_bad_points_name_the_element(body: Any, message: str) -> None:
    assert _refused(body) == message


def test_too_many_points_is_413() -> None:
    message = _refused({"points": [_point()] * 3}, 413, max_items=2)
    assert message == "points: 3 items is more than the limit of 2 per request"


def test_huge_integer_event_time_is_refused() -> None:
    assert "eventTime" in _refused({"points": [_point(eventTime=10**400)]})


# -- sending events -------------------------------------------------------------------------------


def _sending(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "events": [{"eventId": "e1", "faces": []}, {"kind": "raw", "payload": "x"}],
        "handlerId": "h1",
        "accountId": "a1",
        "requestId": "r1",
        "createEventTime": "2024-01-01T00:00:00+00:00",
        "endEventTime": "2024-01-01T00:00:01+00:00",
    }
    body.update(overrides)
    return body


def test_sending_arguments_in_callback_order() -> None:
    events, handler_id, account_id, request_id, created, ended = parse_sending(_sending(), max_items=10)
    assert [type(event) for event in events] == [Event, RawEvent]
    assert events[0].asDict() == {"eventId": "e1", "faces": []}
    assert (handler_id, account_id, request_id) == ("h1", "a1", "r1")
    assert (created, ended) == ("2024-01-01T00:00:00+00:00", "2024-01-01T00:00:01+00:00")


def test_sending_defaults_request_id_and_times() -> None:
    body = _sending()
    for key in ("requestId", "createEventTime", "endEventTime"):
        del body[key]
    _, _, _, request_id, created, ended = parse_sending(body, max_items=10)
    assert str(uuid.UUID(request_id)) == request_id
    assert datetime.fromisoformat(created).tzinfo is not None
    assert created == ended


def test_sending_event_kind_other_than_raw_is_event() -> None:
    events = parse_sending(_sending(events=[{"kind": "RAW"}, {"kind": None}]), max_items=10)[0]
    assert [type(event) for event in events] == [Event, Event]


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"handlerId": None}, 422, "handlerId: required, a string"),
        ({"accountId": None}, 422, "accountId: required, a string"),
        ({"handlerId": 5}, 422, "handlerId: must be a string, got number"),
        ({"requestId": False}, 422, "requestId: must be a string, got boolean"),
        ({"events": None}, 422, "events: required, must be an array, got null"),
        ({"events": ["x"]}, 422, "events[0]: must be an object, got string"),
        ({"events": [{}] * 4}, 413, "events: 4 items is more than the limit of 3 per request"),
    ],
)
def test_bad_sending_bodies(overrides: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_sending(_sending(**overrides), max_items=3)
    assert (caught.value.status, caught.value.message) == (status, message)


def test_sending_body_must_be_an_object() -> None:
    with pytest.raises(PayloadError, match="with a 'events' list, got string"):
        parse_sending("events", max_items=3)

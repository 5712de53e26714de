"""Validation of event-intake bodies. Everything that reaches a plugin passed through here.

``parse_points`` and ``parse_sending`` take a JSON value (``decode_json``), ``decode_sending``
the request body. All raise :class:`PayloadError` with an HTTP status and a message naming the
offending element (``points[3].tags.route: ...``). ``parse_points`` is also the reference the
fast monitoring decoder (:mod:`luna_sidecar.intake.point_decoding`) defers to for every body it refuses.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from luna_plugins.handler_event.base_plugin import Event, RawEvent
from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict

_TAG_TYPES = (str, int, float)
_FIELD_TYPES = (str, int, float, bool)
isfinite = math.isfinite


class PayloadError(ValueError):
    """A body the intake refuses: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> PayloadError:
    return PayloadError(422, message)


def _check_values(index: int, part: str, values: Any, allowed: tuple[type, ...], what: str) -> dict[str, Any]:
    # The location text is built only on failure: this runs for every point of every batch.
    if values is None:
        return {}
    if values.__class__ is not dict:
        raise _bad(f"points[{index}].{part}: must be an object of {what}")
    for key, value in values.items():
        kind = value.__class__
        if kind not in allowed:
            raise _bad(f"points[{index}].{part}.{key}: must be {what}, got {_json_type(value)}")
        if kind is float and not math.isfinite(value):
            raise _bad(f"points[{index}].{part}.{key}: must be a finite number")
    return values


def decode_json(raw: bytes) -> Any:
    """``raw`` as strict JSON (no NaN or Infinity); raises :class:`PayloadError` 400 otherwise."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(400, f"body is not valid JSON: {exc}") from None


def decode_sending(raw: bytes, *, max_items: int) -> tuple[list[Event | RawEvent], str, str, str, str, str]:
    """A ``sending_event`` request body -> the callback's arguments (see :func:`parse_sending`)."""
    return parse_sending(decode_json(raw), max_items=max_items)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _object(body: Any, key: str) -> dict[str, Any]:
    if body.__class__ is not dict:
        raise _bad(f"body must be a JSON object with a {key!r} list, got {_json_type(body)}")
    return body


def _items(body: dict[str, Any], key: str, max_items: int) -> list[Any]:
    items = body.get(key)
    if items.__class__ is not list:
        raise _bad(f"{key}: required, must be an array, got {_json_type(items)}")
    if len(items) > max_items:
        raise PayloadError(
            413, f"{key}: {len(items)} items is more than the limit of {max_items} per request"
        )
    return items


def parse_points(body: Any, *, max_items: int) -> list[MonitoringPoint]:
    """``{"points": [{"series", "eventTime", "tags", "fields"}, ...]}`` -> monitoring points.

    ``series`` (non-empty string) and ``eventTime`` (UNIX seconds) are required; ``tags`` values
    are strings or numbers, ``fields`` values strings, numbers or booleans; other keys are ignored.
    The points' tags and fields are :class:`ReadOnlyDict`.
    """
    items = _items(_object(body, "points"), "points", max_items)
    points = []
    for index, item in enumerate(items):
        if item.__class__ is not dict:
            raise _bad(f"points[{index}]: must be an object, got {_json_type(item)}")
        series = item.get("series")
        if series.__class__ is not str or not series:
            raise _bad(f"points[{index}].series: required, a non-empty string")
        event_time: Any = item.get("eventTime")
        event_seconds: float
        kind = event_time.__class__
        if kind is float:
            event_seconds = event_time
        elif kind is int:
            try:
                event_seconds = float(event_time)
            except OverflowError:
                event_seconds = math.inf
        else:
            raise _bad(
                f"points[{index}].eventTime: required, UNIX seconds as a number, got {_json_type(event_time)}"
            )
        if not math.isfinite(event_seconds):
            raise _bad(f"points[{index}].eventTime: must be a finite number")
        # Fast path inline (this loop runs for every point); the helper only builds the error.
        tags = item.get("tags")
        if tags is None:
            tags = {}
        elif tags.__class__ is dict:
            for value in tags.values():
                kind = value.__class__
                if kind is not str and kind is not int and (kind is not float or not isfinite(value)):
                    _check_values(index, "tags", tags, _TAG_TYPES, "strings or numbers")
        else:
            _check_values(index, "tags", tags, _TAG_TYPES, "strings or numbers")
        fields = item.get("fields")
        if fields is None:
            fields = {}
        elif fields.__class__ is dict:
            for value in fields.values():
                kind = value.__class__
                if (
                    kind is not str
                    and kind is not int
                    and kind is not bool
                    and (kind is not float or not isfinite(value))
                ):
                    _check_values(index, "fields", fields, _FIELD_TYPES, "strings, numbers or booleans")
        else:
            _check_values(index, "fields", fields, _FIELD_TYPES, "strings, numbers or booleans")
        points.append(MonitoringPoint(series, event_seconds, ReadOnlyDict(tags), ReadOnlyDict(fields)))
    return points


def parse_sending(body: Any, *, max_items: int) -> tuple[list[Event | RawEvent], str, str, str, str, str]:
    """``{"events": [...], "handlerId", "accountId", "requestId", "createEventTime",
    "endEventTime"}`` -> the positional arguments of ``sending_event`` callbacks.

    ``events`` (objects; ``"kind": "raw"`` makes a :class:`RawEvent`), ``handlerId`` and
    ``accountId`` are required; a missing ``requestId`` is generated and missing times are now.
    """
    data = _object(body, "events")
    items = _items(data, "events", max_items)
    events: list[Event | RawEvent] = []
    for index, item in enumerate(items):
        if item.__class__ is not dict:
            raise _bad(f"events[{index}]: must be an object, got {_json_type(item)}")
        events.append(RawEvent(item) if item.get("kind") == "raw" else Event(item))
    now = datetime.now(UTC).isoformat()
    defaults = {"createEventTime": now, "endEventTime": now}
    values: list[str] = []
    for key in ("handlerId", "accountId", "requestId", "createEventTime", "endEventTime"):
        value = data.get(key)
        if value is None:
            if key == "requestId":
                value = str(uuid.uuid4())
            elif key in defaults:
                value = defaults[key]
            else:
                raise _bad(f"{key}: required, a string")
        elif not isinstance(value, str):
            raise _bad(f"{key}: must be a string, got {_json_type(value)}")
        values.append(value)
    handler_id, account_id, request_id, created, ended = values
    return events, handler_id, account_id, request_id, created, ended

"""The intake's body shapes, checked and encoded on the service side.

A point or event the sidecar would refuse is refused here, when it is added, with a message that
names the offending value (``tags.route: ...``): one bad value then never costs the points sent
beside it. The checks follow the intake contract (``docs/openapi/intake.yaml``): ``series`` a
non-empty string, ``eventTime`` a finite number, tag values strings or numbers, field values
strings, numbers or booleans, numbers finite and integers within 64 bits; events JSON objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: integers outside this range are not portable JSON (the intake's decoder refuses them)
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class InvalidPointError(ValueError):
    """A point or event the intake would refuse; the message names the value and why."""


def _describe(value: object) -> str:
    return type(value).__name__


def _bad_value(where: str, key: object, value: object, allowed: str) -> InvalidPointError:
    if not isinstance(key, str):
        return InvalidPointError(f"{where}: keys must be strings, got {_describe(key)} {key!r}")
    if isinstance(value, float):
        return InvalidPointError(f"{where}.{key}: must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and (value < MIN_INT or value > MAX_INT):
        return InvalidPointError(f"{where}.{key}: integer {value} does not fit in 64 bits")
    return InvalidPointError(f"{where}.{key}: must be {allowed}, got {_describe(value)}")


def _int_ok(value: int) -> bool:
    return MIN_INT <= value <= MAX_INT


def checked_values(where: str, values: Mapping[str, Any] | None, *, booleans: bool) -> dict[str, Any]:
    """A copy of ``values`` (tags, or fields when ``booleans``), or :class:`InvalidPointError`.

    Runs for every point a service adds: the common case (a dict of strings and numbers) takes
    one pass with identity checks; the message is built only on failure."""
    if values is None:
        return {}
    if values.__class__ is not dict:
        if not isinstance(values, Mapping):
            raise InvalidPointError(f"{where}: must be a mapping of names to values, got {_describe(values)}")
        values = dict(values)
    for key, value in values.items():
        kind = value.__class__
        if key.__class__ is str and (
            kind is str
            or (kind is float and value - value == 0)  # finite: inf - inf and nan - nan are nan
            or (kind is int and MIN_INT <= value <= MAX_INT)
            or (kind is bool and booleans)
        ):
            continue
        raise _bad_value(
            where, key, value, "a string, number or boolean" if booleans else "a string or number"
        )
    return dict(values)


def checked_point(
    series: str, tags: Mapping[str, Any] | None, fields: Mapping[str, Any] | None, event_time: float
) -> dict[str, Any]:
    """The point as the intake takes it, or :class:`InvalidPointError`."""
    if series.__class__ is not str or not series:
        raise InvalidPointError(f"series: must be a non-empty string, got {series!r}")
    kind = event_time.__class__
    if kind is float:
        if not math.isfinite(event_time):
            raise InvalidPointError(f"eventTime: must be a finite number of UNIX seconds, got {event_time!r}")
    elif kind is not int or not _int_ok(event_time):  # type: ignore[arg-type]
        raise InvalidPointError(f"eventTime: must be UNIX seconds as a number, got {event_time!r}")
    return {
        "series": series,
        "eventTime": event_time,
        "tags": checked_values("tags", tags, booleans=False),
        "fields": checked_values("fields", fields, booleans=True),
    }


def encode_points(points: Sequence[dict[str, Any]]) -> bytes:
    """The ``monitoring_event`` body for ``points``."""
    return _encode({"points": points}).encode()


def encode_event(index: int, event: Any) -> str:
    """One event as JSON text, or :class:`InvalidPointError` naming ``events[index]``."""
    if not isinstance(event, Mapping):
        raise InvalidPointError(f"events[{index}]: must be a mapping (a JSON object), got {_describe(event)}")
    try:
        return _encode(dict(event))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPointError(f"events[{index}]: cannot be sent as JSON: {exc}") from None


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The fields of a ``sending_event`` body beside ``events``, as JSON members (no braces)."""
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise InvalidPointError(f"{key}: must be a string, got {_describe(value)}")
    return _encode(dict(metadata))[1:-1]


def encode_events(events: Sequence[str], metadata: str) -> bytes:
    """The ``sending_event`` body from events already encoded and the encoded metadata."""
    separator = "," if metadata else ""
    return f'{{"events":[{",".join(events)}]{separator}{metadata}}}'.encode()

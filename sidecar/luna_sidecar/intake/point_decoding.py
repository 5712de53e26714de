"""Monitoring batches from request bytes to read-only points, validated while decoded.

The batch is decoded by msgspec straight into :class:`MonitoringPoint` structs (in C: types,
non-empty series, finite numbers and the batch size are checked as the bytes are read), then
the points' tags and fields become :class:`ReadOnlyDict`, so all plugins can share them.

msgspec takes only the common shape: a ``points`` list of objects with no other keys than
``series``, ``eventTime``, ``tags`` and ``fields``, so every byte it accepts was decoded and
checked (content it would skip, such as an unknown key's value, is not checked as strictly as
the JSON parser checks it). Any other body is decided by the reference path,
``payloads.parse_points`` over the strict JSON parser: it names the offending element
(``points[3].tags.route: ...``) with the status to answer, or accepts what msgspec is stricter
about (other keys, ``"tags": null``, an integer beyond 64 bits). So every body gets exactly the
answer the reference path gives; the tests check this on random and malformed bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec.structs import force_setattr

from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict
from luna_sidecar.intake.payloads import decode_json, parse_points


class PointDecoder:
    """Decodes ``monitoring_event`` bodies of at most ``max_items`` points."""

    def __init__(self, *, max_items: int) -> None:
        self.max_items = max_items
        batch = msgspec.defstruct(
            "MonitoringBatch",
            [("points", Annotated[list[MonitoringPoint], msgspec.Meta(max_length=max_items)])],
            gc=False,
            forbid_unknown_fields=True,
        )
        # typed Any: the batch type is made at run time (its bound is a setting)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(batch)

    def decode(self, raw: bytes) -> list[MonitoringPoint]:
        """The points of ``raw``, each with read-only tags and fields; raises
        :class:`~luna_sidecar.intake.payloads.PayloadError` (400, 413 or 422, naming the element) for a
        body the intake refuses."""
        try:
            points: list[MonitoringPoint] = self._decoder.decode(raw).points
        except msgspec.MsgspecError:
            return parse_points(decode_json(raw), max_items=self.max_items)
        for point in points:
            force_setattr(point, "tags", ReadOnlyDict(point.tags))
            force_setattr(point, "fields", ReadOnlyDict(point.fields))
        return points

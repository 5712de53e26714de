"""Monitoring points: what a service measures, as handed to ``monitoring_event`` plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TagValue = str | int | float
FieldValue = str | int | float | bool


class MonitoringPoint:
    """One measurement of a service.

    ``series`` names what was measured (``requests``, ``errors``...); ``eventTime`` is when the
    measured thing started, in UNIX seconds; ``tags`` are indexed, low-cardinality values and
    ``fields`` are the unindexed values. Plugins may rely on these four attributes; the runtime
    never mutates a point after handing it out, and plugins should not either.
    """

    __slots__ = ("eventTime", "fields", "series", "tags")

    def __init__(
        self,
        series: str,
        eventTime: float,
        tags: dict[str, TagValue] | None = None,
        fields: dict[str, FieldValue] | None = None,
    ) -> None:
        self.series = series
        self.eventTime = eventTime
        self.tags: dict[str, TagValue] = tags if tags is not None else {}
        self.fields: dict[str, FieldValue] = fields if fields is not None else {}

    def asDict(self) -> dict[str, Any]:
        """The point as a plain dict, the same shape the event intake accepts."""
        return {
            "series": self.series,
            "eventTime": self.eventTime,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
        }

    @classmethod
    def fromDict(cls, data: Mapping[str, Any]) -> MonitoringPoint:
        """Build a point from an already validated mapping (see the runtime's intake)."""
        return cls(data["series"], float(data["eventTime"]), dict(data["tags"]), dict(data["fields"]))

    def __repr__(self) -> str:
        return f"MonitoringPoint(series={self.series!r}, eventTime={self.eventTime!r}, tags={self.tags!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MonitoringPoint):
            return NotImplemented
        return (self.series, self.eventTime, self.tags, self.fields) == (
            other.series,
            other.eventTime,
            other.tags,
            other.fields,
        )

    __hash__ = None  # type: ignore[assignment]

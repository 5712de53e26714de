"""Monitoring points: what a service measures, as handed to ``monitoring_event`` plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NoReturn

import msgspec

TagValue = str | int | float
FieldValue = str | int | float | bool

# The bounds a JSON integer must keep to be decoded as an int (msgspec checks them in C; a
# larger one takes the runtime's reference path, which reads it as the JSON parser does).
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_TagValue = str | _Int | float
_FieldValue = str | _Int | float | bool


class ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes: the ``tags`` and ``fields`` of the points the runtime hands
    to plugins. Every monitoring plugin receives the same point objects, so one plugin changing
    them would change what the others see; this raises ``TypeError`` instead.

    Reading works as with any dict, and so do ``json.dumps``, ``isinstance(x, dict)``,
    ``copy``/``deepcopy``/``pickle``; ``dict(x)``, ``x.copy()`` and ``x | other`` return a plain,
    changeable ``dict``.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            "the tags and fields of a monitoring point are read-only (other plugins receive the "
            "same point); change a copy: dict(point.tags)"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        # copy, deepcopy and pickle rebuild it from a plain dict (not by setting items)
        return (type(self), (dict(self),))


# forbid_unknown_fields: the runtime's decoder takes only this shape; a point with other keys is
# read by its reference path, which ignores them (see luna_sidecar.intake.point_decoding)
class MonitoringPoint(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One measurement of a service.

    ``series`` names what was measured (``requests``, ``errors``...); ``eventTime`` is when the
    measured thing started, in UNIX seconds; ``tags`` are indexed, low-cardinality values and
    ``fields`` are the unindexed values. Plugins may rely on these four attributes.

    A point is immutable: its attributes cannot be assigned, and the ``tags`` and ``fields`` of
    every point the runtime hands to a plugin are :class:`ReadOnlyDict` (a plugin that wants to
    change them changes a copy). Points a plugin builds itself keep the dicts it passes.
    """

    series: Annotated[str, msgspec.Meta(min_length=1)]
    eventTime: float
    tags: dict[str, _TagValue] = {}
    fields: dict[str, _FieldValue] = {}

    def asDict(self) -> dict[str, Any]:
        """The point as a plain dict (new, changeable), the same shape the event intake accepts."""
        return {
            "series": self.series,
            "eventTime": self.eventTime,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
        }

    @classmethod
    def fromDict(cls, data: Mapping[str, Any]) -> MonitoringPoint:
        """Build a point from an already validated mapping (see the runtime's intake)."""
        return cls(
            data["series"],
            float(data["eventTime"]),
            dict(data.get("tags") or {}),
            dict(data.get("fields") or {}),
        )

"""Where the ``requests`` points of one set of raw label values are recorded, with their
durations bucketed in bulk.

Bucketing a duration on its own costs a search and two adds per point; appending it to a list
costs one call. So the durations of a label set wait in :attr:`RequestCells.durations` and are
counted into ``luna_requests_total`` and the duration histogram by :meth:`RequestCells.fold`, a
sort and one search per bucket bound for all of them, which the metrics run before every scrape
and every few thousand points (see :class:`~luna_sidecar.observability.mapping.PointMetrics`).
"""

from __future__ import annotations

from bisect import bisect_right


class RequestCells:
    """The cells of one set of raw ``(service, route, status_code)`` tag values: its counter cell
    (``[value]`` of ``luna_requests_total``), its duration histogram's state (a count per bucket,
    +Inf, then the sum) and the float durations of points not folded into them yet."""

    __slots__ = ("durations", "state", "total")

    def __init__(self, total: list[float], state: list[float]) -> None:
        self.total = total
        self.state = state
        #: float (finite) durations of points counted in neither cell yet, one per point
        self.durations: list[float] = []

    def fold(self, buckets: tuple[float, ...]) -> None:
        """Count the waiting durations' points in the counter and the durations in the histogram
        (``buckets``: its sorted upper bounds, a value equal to a bound counting in its bucket)."""
        durations = self.durations
        if not durations:
            return
        waiting = len(durations)
        self.total[0] += waiting
        state = self.state
        durations.sort()
        below = 0
        for index, bound in enumerate(buckets):
            upto = bisect_right(durations, bound)  # durations <= bound
            state[index] += upto - below
            below = upto
        state[len(buckets)] += waiting - below
        state[-1] += sum(durations)
        durations.clear()

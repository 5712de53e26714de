"""Counters and histograms counted on the event loop only: plain numbers, no lock.

prometheus-client's own metrics take a lock on every ``inc`` and walk the buckets of a histogram
in Python; the runtime's busiest metrics (every intake request, route request and callback) are
changed only by code running on the event loop, and read there too (``/metrics`` is served by
the same loop), so they need neither. Same API as prometheus-client's (``labels(...).inc()``,
``observe``, ``remove``), same exposition.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One series of a :class:`LoopCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (not negative)."""
        self.value += amount


class HistogramChild:
    """One series of a :class:`LoopHistogram`: a count per bucket (the last one +Inf) and the sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Record ``value``."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class LoopCounter(_Family):
    """A counter family (exposed as ``NAME_total``) changed on the event loop only."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        """The series of these label values (created, at 0, on first use)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected label values for {self.labelnames}, got {values}")
            child = self._children[values] = CounterChild()
        return child

    def remove(self, *values: str) -> None:
        """Drop the series of these label values."""
        self._children.pop(values, None)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class LoopHistogram(_Family):
    """A histogram family with the given bucket bounds, changed on the event loop only."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = tuple(sorted(float(bound) for bound in buckets))
        self._children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        """The series of these label values (created, empty, on first use)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected label values for {self.labelnames}, got {values}")
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def remove(self, *values: str) -> None:
        """Drop the series of these label values."""
        self._children.pop(values, None)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        # the bucket labels prometheus-client writes (untyped function)
        bounds = [*(floatToGoString(bound) for bound in self.bounds), "+Inf"]  # type: ignore[no-untyped-call]
        for values, child in list(self._children.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, child.counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric(values, cumulative, sum_value=child.sum)
        yield family

"""Loop-only counters and histograms expose what prometheus-client's own would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.registry import REGISTRY

from luna_sidecar.observability.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.5, 1, 2.5, 30)


def _without_created(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_the_exposition_is_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LoopCounter("unit_things", "Things.", ["plugin", "kind"], ours)
    histogram = LoopHistogram("unit_seconds", "Time.", ["plugin"], ours, buckets=BUCKETS)
    reference_counter = Counter("unit_things", "Things.", ["plugin", "kind"], registry=theirs)
    reference_histogram = Histogram("unit_seconds", "Time.", ["plugin"], registry=theirs, buckets=BUCKETS)
    for values, amount in ((("a", "x"), 1.0), (("a", "x"), 2.5), (("b", "y"), 0.0)):
        counter.labels(*values).inc(amount)
        reference_counter.labels(*values).inc(amount)
    for value in (0.0005, 0.001, 0.2, 1.0, 7.0, 100.0):
        histogram.labels("a").observe(value)
        reference_histogram.labels("a").observe(value)
    histogram.labels("empty")
    reference_histogram.labels("empty")
    assert _without_created(ours) == _without_created(theirs)


def test_removed_series_are_gone_and_come_back_at_zero() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("unit_removed", "Removed.", ["plugin"], registry)
    counter.labels("a").inc(3)
    counter.remove("a")
    assert "unit_removed_total{" not in generate_latest(registry).decode()
    counter.labels("a").inc()
    assert 'unit_removed_total{plugin="a"} 1.0' in generate_latest(registry).decode()


def test_label_values_must_match_the_names() -> None:
    counter = LoopCounter("unit_labels", "Labels.", ["plugin", "kind"], CollectorRegistry())
    with pytest.raises(ValueError, match="expected label values"):
        counter.labels("only-one")


def test_nothing_lands_in_the_global_registry() -> None:
    LoopCounter("unit_private", "Private.", [], CollectorRegistry())
    assert "unit_private" not in generate_latest(REGISTRY).decode()

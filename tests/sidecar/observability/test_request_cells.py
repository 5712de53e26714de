"""Durations bucketed in bulk: the same counts as one by one, and never held unbounded."""

from __future__ import annotations

import random
from bisect import bisect_left

import pytest
from prometheus_client import CollectorRegistry

from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.observability import mapping
from luna_sidecar.observability.mapping import DURATION_BUCKETS, PointMetrics
from luna_sidecar.observability.metrics import RuntimeMetrics
from luna_sidecar.observability.request_cells import RequestCells
from tests.support.runtime import metric_value

BUCKETS = tuple(float(bound) for bound in DURATION_BUCKETS)


def one_by_one(values: list[float]) -> list[float]:
    state = [0.0] * (len(BUCKETS) + 2)
    for value in values:
        state[bisect_left(BUCKETS, value)] += 1
        state[-1] += value
    return state


def test_fold_counts_like_bucketing_each_value() -> None:
    rng = random.Random(3)
    # bounds themselves (a value equal to a bound counts in its bucket), past the last bound, 0
    values = [*BUCKETS, 0.0, 31.0, 1e9, *(rng.lognormvariate(-3, 2) for _ in range(300))]
    rng.shuffle(values)
    total, state = [5.0], [0.0] * (len(BUCKETS) + 2)
    cells = RequestCells(total, state)
    cells.durations.extend(values[:100])
    cells.fold(BUCKETS)
    cells.durations.extend(values[100:])
    cells.fold(BUCKETS)
    expected = one_by_one(values)
    assert state[:-1] == expected[:-1]
    assert state[-1] == pytest.approx(expected[-1])
    assert total == [5.0 + len(values)]
    assert cells.durations == []


def test_fold_of_nothing_changes_nothing() -> None:
    total, state = [2.0], [1.0] * (len(BUCKETS) + 2)
    RequestCells(total, state).fold(BUCKETS)
    assert total == [2.0] and state == [1.0] * (len(BUCKETS) + 2)


def point(route: str, elapsed: float) -> MonitoringPoint:
    tags = {"service": "s", "route": route, "status_code": 200}
    return MonitoringPoint("requests", 1.0, tags, {"execution_time": elapsed})


def test_waiting_durations_are_folded_every_few_thousand_points(
    registry: CollectorRegistry, runtime_metrics: RuntimeMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mapping, "FOLD_EVERY", 50)
    metrics = PointMetrics(
        overflow_counter=runtime_metrics.label_overflow,
        error_counter=runtime_metrics.point_errors,
        max_label_sets=10,
    )
    registry.register(metrics)
    batch = [point(f"GET:/{index % 3}", 0.01) for index in range(20)]
    waiting = []
    for _ in range(10):
        metrics.observe(batch)
        waiting.append(sum(len(cells.durations) for cells in metrics._request_cells.values()))
    assert max(waiting) < 50 + len(batch)
    assert min(waiting) == 0  # folded without a scrape
    labels = {"luna_service": "s", "route": "GET:/0", "status_code": "200"}
    assert metric_value(registry, "luna_requests_total", labels) == 70.0
    assert all(not cells.durations for cells in metrics._request_cells.values())  # the scrape folded


def test_a_scrape_shows_every_point_observed_before_it(
    registry: CollectorRegistry, runtime_metrics: RuntimeMetrics
) -> None:
    metrics = PointMetrics(
        overflow_counter=runtime_metrics.label_overflow,
        error_counter=runtime_metrics.point_errors,
        max_label_sets=10,
    )
    registry.register(metrics)
    labels = {"luna_service": "s", "route": "GET:/a"}
    for scrape in range(1, 4):
        metrics.observe([point("GET:/a", 0.2), point("GET:/a", 7.0)])
        assert metric_value(registry, "luna_request_duration_seconds_count", labels) == 2.0 * scrape
        below = labels | {"le": "0.25"}
        assert metric_value(registry, "luna_request_duration_seconds_bucket", below) == scrape
        assert metric_value(registry, "luna_requests_total", labels | {"status_code": "200"}) == 2.0 * scrape

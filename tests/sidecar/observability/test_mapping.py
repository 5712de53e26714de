"""Monitoring points -> Prometheus metrics, checked on the exposition text."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.observability.mapping import DURATION_BUCKETS, MappingError, PointMetrics, load_rules
from luna_sidecar.observability.metrics import RuntimeMetrics
from tests.support.runtime import metric_value

Build = Callable[..., PointMetrics]


@pytest.fixture
def build(registry: CollectorRegistry, runtime_metrics: RuntimeMetrics) -> Build:
    """A PointMetrics registered in the test's registry (at most one per test)."""

    def make(*, max_label_sets: int = 100, rules: Iterable[Mapping[str, Any]] = ()) -> PointMetrics:
        metrics = PointMetrics(
            overflow_counter=runtime_metrics.label_overflow,
            error_counter=runtime_metrics.point_errors,
            max_label_sets=max_label_sets,
            rules=rules,
        )
        registry.register(metrics)
        return metrics

    return make


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples named ``name`` as {sorted label pairs: value}, parsed back from the exposition."""
    found = {}
    for family in text_string_to_metric_families(exposition(registry)):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def request(
    route: str = "POST:/6/handlers/x/events", status: int = 200, elapsed: Any = 0.02, **tags: Any
) -> MonitoringPoint:
    return MonitoringPoint(
        "requests",
        1_700_000_000.0,
        {"service": "handlers", "route": route, "status_code": status, **tags},
        {"request_id": "req-1", "execution_time": elapsed}
        if elapsed is not None
        else {"request_id": "req-1"},
    )


def error(route: str = "POST:/x", code: int = 11027) -> MonitoringPoint:
    return MonitoringPoint(
        "errors",
        1_700_000_000.0,
        {"service": "handlers", "route": route, "status_code": 400, "error_code": code},
        {"request_id": "req-2"},
    )


# -- the default mapping --------------------------------------------------------------------------


def test_requests_total_by_luna_service_route_status(registry: CollectorRegistry, build: Build) -> None:
    metrics = build()
    metrics.observe([request(), request(), request(status=500), request(route="GET:/health")])
    text = exposition(registry)
    assert "# TYPE luna_requests_total counter" in text
    assert (
        'luna_requests_total{luna_service="handlers",route="POST:/6/handlers/x/events",status_code="200"} 2.0'
        in text
    )
    assert (
        'luna_requests_total{luna_service="handlers",route="POST:/6/handlers/x/events",status_code="500"} 1.0'
        in text
    )
    assert 'luna_requests_total{luna_service="handlers",route="GET:/health",status_code="200"} 1.0' in text
    assert "req-1" not in text, "request_id must never become a label"
    assert "account_id" not in text


def test_request_duration_histogram_le_semantics(registry: CollectorRegistry, build: Build) -> None:
    metrics = build()
    route = "GET:/r"
    # 0.005 and 1.0 are bucket bounds: a value equal to a bound counts in that bucket (le)
    metrics.observe([request(route, elapsed=value) for value in (0.005, 0.0051, 1.0, 1, 31.5)])
    labels = {"luna_service": "handlers", "route": route}

    def bucket(le: str) -> float:
        return metric_value(registry, "luna_request_duration_seconds_bucket", labels | {"le": le})

    assert bucket("0.005") == 1.0
    assert bucket("0.01") == 2.0
    assert bucket("0.5") == 2.0
    assert bucket("1.0") == 4.0
    assert bucket("30.0") == 4.0
    assert bucket("+Inf") == 5.0
    assert metric_value(registry, "luna_request_duration_seconds_count", labels) == 5.0
    assert metric_value(registry, "luna_request_duration_seconds_sum", labels) == pytest.approx(
        0.005 + 0.0051 + 1.0 + 1 + 31.5
    )
    text = exposition(registry)
    assert "# TYPE luna_request_duration_seconds histogram" in text
    les = [
        sample.labels["le"]
        for family in text_string_to_metric_families(text)
        if family.name == "luna_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]
    assert les == [*(str(bound) for bound in DURATION_BUCKETS), "+Inf"]


def test_requests_missing_a_label_tag_count_with_an_empty_label(
    registry: CollectorRegistry, build: Build
) -> None:
    no_status = MonitoringPoint("requests", 1.0, {"service": "s", "route": "GET:/a"}, {"execution_time": 0.5})
    no_tags = MonitoringPoint("requests", 1.0, {}, {"execution_time": 0.5})
    build().observe([no_status, request("GET:/a", service="s"), no_status, no_tags])
    assert samples(registry, "luna_requests_total") == {
        (("luna_service", "s"), ("route", "GET:/a"), ("status_code", "")): 2.0,
        (("luna_service", "s"), ("route", "GET:/a"), ("status_code", "200")): 1.0,
        (("luna_service", ""), ("route", ""), ("status_code", "")): 1.0,
    }
    assert (
        metric_value(
            registry, "luna_request_duration_seconds_count", {"luna_service": "s", "route": "GET:/a"}
        )
        == 3
    )


def test_request_without_execution_time_is_counted_but_not_timed(
    registry: CollectorRegistry, build: Build
) -> None:
    build().observe([request("GET:/n", elapsed=None)])
    assert (
        metric_value(
            registry,
            "luna_requests_total",
            {"luna_service": "handlers", "route": "GET:/n", "status_code": "200"},
        )
        == 1
    )
    assert samples(registry, "luna_request_duration_seconds_count") == {}
    assert (
        metric_value(registry, "luna_metric_point_errors_total", {"metric": "luna_request_duration_seconds"})
        == 0
    )


@pytest.mark.parametrize("bad", ["0.5", True])
def test_non_numeric_execution_time_is_a_point_error(
    registry: CollectorRegistry, build: Build, bad: Any
) -> None:
    build().observe([request("GET:/bad", elapsed=bad)])
    assert samples(registry, "luna_request_duration_seconds_count") == {}
    assert (
        metric_value(registry, "luna_metric_point_errors_total", {"metric": "luna_request_duration_seconds"})
        == 1
    )
    assert (
        metric_value(
            registry,
            "luna_requests_total",
            {"luna_service": "handlers", "route": "GET:/bad", "status_code": "200"},
        )
        == 1
    )


def test_errors_total(registry: CollectorRegistry, build: Build) -> None:
    build().observe([error(), error(), error(code=2)])
    assert samples(registry, "luna_errors_total") == {
        (("error_code", "11027"), ("luna_service", "handlers"), ("route", "POST:/x")): 2.0,
        (("error_code", "2"), ("luna_service", "handlers"), ("route", "POST:/x")): 1.0,
    }
    assert samples(registry, "luna_requests_total") == {}


def test_monitoring_points_total_only_for_other_series(registry: CollectorRegistry, build: Build) -> None:
    metrics = build()
    other = MonitoringPoint("temperature", 1.0, {"boiler": "b1"}, {"celsius": 80})
    metrics.observe([request(), error(), other, other, MonitoringPoint("queue", 2.0)])
    assert samples(registry, "luna_monitoring_points_total") == {
        (("series", "temperature"),): 2.0,
        (("series", "queue"),): 1.0,
    }


def test_empty_metrics_still_exposed_with_help_and_type(registry: CollectorRegistry, build: Build) -> None:
    build()
    text = exposition(registry)
    for name, kind in [
        ("luna_requests_total", "counter"),
        ("luna_request_duration_seconds", "histogram"),
        ("luna_errors_total", "counter"),
        ("luna_monitoring_points_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}" in text
        assert f"# HELP {name} " in text


def test_label_values_are_escaped(registry: CollectorRegistry, build: Build) -> None:
    build().observe([request(route='GET:/a"b\\c\nd')])
    [labels] = samples(registry, "luna_requests_total")
    assert dict(labels)["route"] == 'GET:/a"b\\c\nd'


# -- the label-set cap ----------------------------------------------------------------------------


def test_label_set_cap_counts_overflow(registry: CollectorRegistry, build: Build) -> None:
    metrics = build(max_label_sets=2)
    metrics.observe(
        [request("GET:/1"), request("GET:/2"), request("GET:/3"), request("GET:/3"), request("GET:/1")]
    )
    routes = {
        dict(labels)["route"]: value for labels, value in samples(registry, "luna_requests_total").items()
    }
    assert routes == {"GET:/1": 2.0, "GET:/2": 1.0}
    assert metric_value(registry, "luna_metric_label_overflow_total", {"metric": "luna_requests"}) == 2
    assert (
        metric_value(
            registry, "luna_metric_label_overflow_total", {"metric": "luna_request_duration_seconds"}
        )
        == 2
    )
    durations = samples(registry, "luna_request_duration_seconds_count")
    assert sorted(dict(labels)["route"] for labels in durations) == ["GET:/1", "GET:/2"]


def test_label_set_cap_for_other_series(registry: CollectorRegistry, build: Build) -> None:
    metrics = build(max_label_sets=1)
    metrics.observe([MonitoringPoint("a", 1.0), MonitoringPoint("b", 1.0), MonitoringPoint("a", 1.0)])
    assert samples(registry, "luna_monitoring_points_total") == {(("series", "a"),): 2.0}
    assert (
        metric_value(registry, "luna_metric_label_overflow_total", {"metric": "luna_monitoring_points"}) == 1
    )


# -- user rules -----------------------------------------------------------------------------------


def test_counter_rule_without_value_counts_points(registry: CollectorRegistry, build: Build) -> None:
    build(rules=[{"series": "door", "name": "door_opened_total", "labels": ["door"]}]).observe(
        [MonitoringPoint("door", 1.0, {"door": "front"}), MonitoringPoint("door", 2.0, {"door": "front"})]
    )
    assert samples(registry, "door_opened_total") == {(("door", "front"),): 2.0}
    assert "# HELP door_opened_total Mapped from door points." in exposition(registry)


def test_counter_rule_with_value_adds_it(registry: CollectorRegistry, build: Build) -> None:
    build(rules=[{"series": "bytes", "name": "sent_bytes", "value": "n", "help": "Bytes sent."}]).observe(
        [MonitoringPoint("bytes", 1.0, {}, {"n": 100}), MonitoringPoint("bytes", 1.0, {}, {"n": "28"})]
    )
    assert samples(registry, "sent_bytes_total") == {(): 128.0}
    assert "# HELP sent_bytes_total Bytes sent." in exposition(registry)


def test_gauge_rule_keeps_last_value_with_labels_from_tags_or_fields(
    registry: CollectorRegistry, build: Build
) -> None:
    rule = {
        "series": "temperature",
        "name": "boiler_temperature_celsius",
        "type": "gauge",
        "labels": ["boiler", "room"],
        "value": "celsius",
    }
    build(rules=[rule]).observe(
        [
            MonitoringPoint("temperature", 1.0, {"boiler": "b1"}, {"celsius": 70.5, "room": "cellar"}),
            MonitoringPoint("temperature", 2.0, {"boiler": "b1"}, {"celsius": 80, "room": "cellar"}),
            MonitoringPoint("temperature", 2.0, {"boiler": 2}, {"celsius": -3.5}),
        ]
    )
    assert samples(registry, "boiler_temperature_celsius") == {
        (("boiler", "b1"), ("room", "cellar")): 80.0,
        (("boiler", "2"), ("room", "")): -3.5,
    }
    assert "# TYPE boiler_temperature_celsius gauge" in exposition(registry)


def test_histogram_rule_with_own_buckets(registry: CollectorRegistry, build: Build) -> None:
    rule = {
        "series": "temperature",
        "name": "water_celsius",
        "type": "histogram",
        "value": "c",
        "buckets": [100, 10, 50],
    }
    build(rules=[rule]).observe(
        [MonitoringPoint("temperature", 1.0, {}, {"c": value}) for value in (5, 10, 50, 60, 120)]
    )
    assert samples(registry, "water_celsius_bucket") == {
        (("le", "10.0"),): 2.0,
        (("le", "50.0"),): 3.0,
        (("le", "100.0"),): 4.0,
        (("le", "+Inf"),): 5.0,
    }
    assert samples(registry, "water_celsius_sum") == {(): 245.0}
    assert samples(registry, "water_celsius_count") == {(): 5.0}


def test_rule_value_problems(registry: CollectorRegistry, build: Build) -> None:
    rule = {"series": "t", "name": "t_value", "type": "gauge", "value": "v"}
    build(rules=[rule]).observe(
        [
            MonitoringPoint("t", 1.0, {}, {}),  # no value: nothing recorded, no error
            MonitoringPoint("t", 1.0, {}, {"v": "warm"}),  # not a number: a point error
            MonitoringPoint("t", 1.0, {}, {"v": "nan"}),
        ]
    )
    assert samples(registry, "t_value") == {}
    assert metric_value(registry, "luna_metric_point_errors_total", {"metric": "t_value"}) == 2


def test_rules_see_the_default_series_too(registry: CollectorRegistry, build: Build) -> None:
    rule = {"series": "requests", "name": "luna_requests_by_account", "labels": ["account_id"]}
    build(rules=[rule]).observe([request(account_id="acc-1"), request(account_id="acc-1")])
    assert samples(registry, "luna_requests_by_account_total") == {(("account_id", "acc-1"),): 2.0}
    assert sum(samples(registry, "luna_requests_total").values()) == 2.0


def test_rule_respects_label_set_cap(registry: CollectorRegistry, build: Build) -> None:
    rule = {"series": "door", "name": "doors", "labels": ["door"]}
    build(max_label_sets=1, rules=[rule]).observe(
        [MonitoringPoint("door", 1.0, {"door": name}) for name in ("a", "b", "c")]
    )
    assert samples(registry, "doors_total") == {(("door", "a"),): 1.0}
    assert metric_value(registry, "luna_metric_label_overflow_total", {"metric": "doors"}) == 2


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("door", r"^metrics\[0\]: expected a mapping with series, name, type$"),
        (
            {"series": "s", "name": "n", "colour": "red", "alias": 1},
            r"^metrics\[0\]: unknown key\(s\) \['alias', 'colour'\]$",
        ),
        ({"name": "n"}, r"^metrics\[0\]\.series: required"),
        (
            {"series": "s", "name": "bad-name"},
            r"^metrics\[0\]\.name: required, a Prometheus metric name \(got 'bad-name'\)$",
        ),
        ({"series": "s", "name": "1abc"}, r"^metrics\[0\]\.name: "),
        ({"series": "s"}, r"^metrics\[0\]\.name: required, a Prometheus metric name \(got None\)$"),
        (
            {"series": "s", "name": "n", "type": "summary"},
            r"^metrics\[0\]\.type: one of \['counter', 'gauge', 'histogram'\] \(got 'summary'\)$",
        ),
        (
            {"series": "s", "name": "n", "labels": ["request_id"]},
            r"^metrics\[0\]\.labels: 'request_id' is unique per request",
        ),
        (
            {"series": "s", "name": "n", "labels": ["bad-label"]},
            r"^metrics\[0\]\.labels: 'bad-label' is not a valid",
        ),
        (
            {"series": "s", "name": "n", "labels": ["__reserved"]},
            r"^metrics\[0\]\.labels: '__reserved' is not a valid",
        ),
        (
            {"series": "s", "name": "n", "labels": "door"},
            r"^metrics\[0\]\.labels: a list of tag or field names$",
        ),
        (
            {"series": "s", "name": "n", "type": "gauge"},
            r"^metrics\[0\]\.value: a gauge needs the field that holds its value$",
        ),
        ({"series": "s", "name": "n", "type": "histogram"}, r"^metrics\[0\]\.value: a histogram needs"),
        ({"series": "s", "name": "n", "value": 3}, r"^metrics\[0\]\.value: the name of a numeric field$"),
        (
            {"series": "s", "name": "n", "type": "histogram", "value": "v", "buckets": []},
            r"^metrics\[0\]\.buckets: ",
        ),
        (
            {"series": "s", "name": "n", "type": "histogram", "value": "v", "buckets": [1, "2"]},
            r"^metrics\[0\]\.buckets: ",
        ),
        (
            {"series": "s", "name": "n", "type": "histogram", "value": "v", "buckets": [True]},
            r"^metrics\[0\]\.buckets: ",
        ),
        (
            {"series": "s", "name": "luna_requests_total"},
            r"^metrics\[0\]\.name: metric 'luna_requests_total' is defined twice$",
        ),
        (
            {"series": "s", "name": "luna_errors"},
            r"^metrics\[0\]\.name: metric 'luna_errors' is defined twice$",
        ),
    ],
)
def test_mapping_errors(build: Build, rule: Any, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        build(rules=[rule])


def test_duplicate_name_between_rules_names_the_later_rule(build: Build) -> None:
    rules = [{"series": "a", "name": "things_total"}, {"series": "b", "name": "things"}]
    with pytest.raises(MappingError, match=r"^metrics\[1\]\.name: metric 'things' is defined twice$"):
        build(rules=rules)


def test_gauge_named_like_an_exposed_counter_is_refused(build: Build) -> None:
    with pytest.raises(MappingError, match="defined twice"):
        build(rules=[{"series": "s", "name": "luna_requests_total", "type": "gauge", "value": "v"}])


def test_histogram_rule_with_le_label_is_refused(build: Build) -> None:
    with pytest.raises(MappingError, match="le"):
        build(rules=[{"series": "s", "name": "h", "type": "histogram", "value": "v", "labels": ["le"]}])


def test_duplicate_label_in_rule_is_refused(build: Build) -> None:
    with pytest.raises(MappingError, match="door"):
        build(rules=[{"series": "s", "name": "n", "labels": ["door", "door"]}])


def test_counter_rule_never_decreases(registry: CollectorRegistry, build: Build) -> None:
    build(rules=[{"series": "s", "name": "amount", "value": "v"}]).observe(
        [MonitoringPoint("s", 1.0, {}, {"v": 5}), MonitoringPoint("s", 1.0, {}, {"v": -3})]
    )
    assert samples(registry, "amount_total") == {(): 5.0}
    assert metric_value(registry, "luna_metric_point_errors_total", {"metric": "amount"}) == 1


def test_huge_integer_execution_time_does_not_abort_the_batch(
    registry: CollectorRegistry, build: Build
) -> None:
    build().observe([request("GET:/big", elapsed=10**400), request("GET:/after")])
    assert (
        metric_value(registry, "luna_metric_point_errors_total", {"metric": "luna_request_duration_seconds"})
        == 1
    )
    assert (
        metric_value(
            registry,
            "luna_requests_total",
            {"luna_service": "handlers", "route": "GET:/after", "status_code": "200"},
        )
        == 1
    )


# -- load_rules -----------------------------------------------------------------------------------


def test_load_rules_from_yaml(tmp_path: Path, registry: CollectorRegistry, build: Build) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "metrics:\n"
        "  - series: temperature   # points of this series\n"
        "    name: boiler_temperature_celsius\n"
        "    type: gauge\n"
        "    labels: [boiler]\n"
        "    value: celsius\n"
        "  - series: temperature\n"
        "    name: boiler_readings_total\n"
    )
    rules = load_rules(path)
    assert rules == [
        {
            "series": "temperature",
            "name": "boiler_temperature_celsius",
            "type": "gauge",
            "labels": ["boiler"],
            "value": "celsius",
        },
        {"series": "temperature", "name": "boiler_readings_total"},
    ]
    build(rules=rules).observe([MonitoringPoint("temperature", 1.0, {"boiler": "x"}, {"celsius": 90})])
    assert samples(registry, "boiler_temperature_celsius") == {(("boiler", "x"),): 90.0}
    assert samples(registry, "boiler_readings_total") == {(): 1.0}


def test_load_rules_accepts_json(tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    path.write_text('{"metrics": [{"series": "a", "name": "a_total"}]}')
    assert load_rules(path) == [{"series": "a", "name": "a_total"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("metrics: [unclosed\n", "is not valid YAML"),
        ("", "expected a top-level 'metrics' list"),
        ("rules: []\n", "expected a top-level 'metrics' list"),
        ("metrics: {a: 1}\n", "expected a top-level 'metrics' list"),
        ("- series: a\n", "expected a top-level 'metrics' list"),
    ],
)
def test_load_rules_bad_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(content)
    with pytest.raises(MappingError, match=message) as caught:
        load_rules(path)
    assert str(path) in str(caught.value)


def test_load_rules_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(MappingError, match=f"cannot read metrics mapping {path}: No such file"):
        load_rules(path)


# -- promtool -------------------------------------------------------------------------------------


def test_exposition_passes_promtool(registry: CollectorRegistry, build: Build) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus')")
    rules = [
        {
            "series": "temperature",
            "name": "boiler_temperature_celsius",
            "type": "gauge",
            "labels": ["boiler"],
            "value": "c",
        },
        {"series": "temperature", "name": "boiler_readings_total", "labels": ["boiler"]},
        {
            "series": "temperature",
            "name": "boiler_c",
            "type": "histogram",
            "value": "c",
            "buckets": [50, 100],
        },
    ]
    metrics = build(max_label_sets=3, rules=rules)
    metrics.observe(
        [
            request(),
            request(status=503, elapsed=0.7),
            request(route='GET:/quote"d', elapsed=40),
            request(route="GET:/over", elapsed=0.1),  # over the cap of 3
            error(),
            MonitoringPoint("temperature", 1.0, {"boiler": "b1"}, {"c": 71}),
            MonitoringPoint("temperature", 1.0, {"boiler": "b2"}, {"c": "hot"}),
            MonitoringPoint("custom", 1.0),
        ]
    )
    text = exposition(registry)
    assert "luna_metric_label_overflow_total" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- batches are recorded as point by point ----------------------------------------------------------


def _record_point_by_point(metrics: PointMetrics, points: Iterable[MonitoringPoint]) -> None:
    """The model: every point recorded on its own (the mapping's first implementation)."""
    for point in points:
        tags = point.tags
        if point.series == "requests":
            service, route = str(tags.get("service", "")), str(tags.get("route", ""))
            metrics.requests.inc((service, route, str(tags.get("status_code", ""))))
            elapsed = point.fields.get("execution_time")
            if elapsed.__class__ is float:
                metrics.duration.observe((service, route), elapsed)
            elif elapsed is not None:
                seconds = None
                if elapsed.__class__ is int:
                    try:
                        seconds = float(elapsed)
                    except OverflowError:
                        seconds = None
                if seconds is None:
                    metrics._overflow.bad_value(metrics.duration.name)
                else:
                    metrics.duration.observe((service, route), seconds)
        elif point.series == "errors":
            code = str(tags.get("error_code", ""))
            metrics.errors.inc((str(tags.get("service", "")), str(tags.get("route", "")), code))
        else:
            metrics.other_points.inc((point.series,))


def _random_points(rng: random.Random, count: int) -> list[MonitoringPoint]:
    points = []
    for _ in range(count):
        series = rng.choice(["requests", "requests", "requests", "errors", "custom", "other"])
        tags: dict[str, Any] = {}
        for name, values in (
            ("service", ["handlers", "faces", 7]),
            ("route", ["GET:/a", "POST:/b", "PUT:/c/{id}"]),
            ("status_code", [200, "200", 404, 500, 201.0]),
            ("error_code", [11027, "x"]),
        ):
            if rng.random() < 0.9:
                tags[name] = rng.choice(values)
        fields: dict[str, Any] = {}
        if rng.random() < 0.9:
            fields["execution_time"] = rng.choice(
                [rng.uniform(0, 0.2), rng.uniform(0, 40), 3, 0, -1, 10**400, "slow", True]
            )
        points.append(MonitoringPoint(series, 1.0, tags, fields))
    return points


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_is_recorded_as_point_by_point(runtime_metrics: RuntimeMetrics, seed: int) -> None:
    def fresh() -> tuple[CollectorRegistry, PointMetrics]:
        registry = CollectorRegistry()
        metrics = RuntimeMetrics(registry)
        point_metrics = PointMetrics(
            overflow_counter=metrics.label_overflow, error_counter=metrics.point_errors, max_label_sets=1000
        )
        registry.register(point_metrics)
        return registry, point_metrics

    rng = random.Random(seed)
    batches = [_random_points(rng, rng.randrange(1, 300)) for _ in range(5)]
    batch_registry, batch_metrics = fresh()
    model_registry, model_metrics = fresh()
    for points in batches:
        batch_metrics.observe(points)
        _record_point_by_point(model_metrics, points)

    def shown(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition(registry))
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    batch, model = shown(batch_registry), shown(model_registry)
    assert batch.keys() == model.keys()
    for key, value in model.items():
        # histogram sums may differ in the last bits: values are added in another order
        assert batch[key] == pytest.approx(value, rel=1e-12), key
    assert any(name == "luna_metric_point_errors_total" for name, _ in batch)


def test_overflow_counts_every_point_of_a_label_set_that_does_not_fit(
    registry: CollectorRegistry, build: Build
) -> None:
    metrics = build(max_label_sets=1)
    metrics.observe([request(route="GET:/a")] + [request(route="GET:/b")] * 3)
    overflow = samples(registry, "luna_metric_label_overflow_total")
    assert overflow[(("metric", "luna_requests"),)] == 3
    assert overflow[(("metric", "luna_request_duration_seconds"),)] == 3


def test_many_distinct_label_values_keep_counting_right(registry: CollectorRegistry, build: Build) -> None:
    metrics = build(max_label_sets=3)
    for round_number in range(3):
        metrics.observe([request(route=f"GET:/{index}") for index in range(20)])
        counted = samples(registry, "luna_requests_total")
        assert len(counted) == 3 and set(counted.values()) == {round_number + 1.0}
    overflow = samples(registry, "luna_metric_label_overflow_total")
    assert overflow[(("metric", "luna_requests"),)] == 3 * 17


@pytest.mark.parametrize("tag", ["service", "namespace", "pod", "container", "endpoint", "job", "instance"])
def test_a_tag_named_like_a_target_label_is_exposed_as_luna_tag(
    registry: CollectorRegistry, build: Build, tag: str
) -> None:
    rule = {"series": "boiler", "name": "boiler_points_total", "labels": [tag, "boiler"]}
    build(rules=[rule]).observe([MonitoringPoint("boiler", 1.0, {tag: "forged", "boiler": "b1"}, {})])
    assert samples(registry, "boiler_points_total") == {(("boiler", "b1"), (f"luna_{tag}", "forged")): 1.0}


@pytest.mark.parametrize("labels", [["service", "luna_service"], ["pod", "luna_pod", "boiler"]])
def test_a_rule_that_would_expose_a_label_twice_is_refused(build: Build, labels: list[str]) -> None:
    with pytest.raises(MappingError, match="would expose a label twice"):
        build(rules=[{"series": "boiler", "name": "boiler_points_total", "labels": labels}])


def _expected_requests(
    batches: list[list[MonitoringPoint]],
) -> tuple[dict[Any, float], dict[Any, list[float]], int]:
    """What recording ``batches`` point by point gives: requests counts by label set, duration
    histogram states (a count per bucket, +Inf, sum) by (service, route), execution times that
    are no number."""
    counts: dict[Any, float] = {}
    states: dict[Any, list[float]] = {}
    bad = 0
    for point in (point for batch in batches for point in batch):
        tags = point.tags
        service, route = str(tags.get("service", "")), str(tags.get("route", ""))
        key = (("luna_service", service), ("route", route), ("status_code", str(tags.get("status_code", ""))))
        counts[key] = counts.get(key, 0.0) + 1
        elapsed = point.fields.get("execution_time")
        if elapsed is None:
            continue
        if not isinstance(elapsed, int | float) or isinstance(elapsed, bool):
            bad += 1
            continue
        try:
            value = float(elapsed)
        except OverflowError:
            bad += 1
            continue
        state = states.setdefault(
            (("luna_service", service), ("route", route)), [0.0] * (len(DURATION_BUCKETS) + 2)
        )
        state[sum(1 for bound in DURATION_BUCKETS if bound < value)] += 1
        state[-1] += value
    return counts, states, bad


def test_label_sets_seen_before_are_recorded_alike(registry: CollectorRegistry, build: Build) -> None:
    # later batches go to the cells their raw label values were mapped to by earlier ones: the
    # exposition must be what point-by-point recording gives, odd execution times included
    rng = random.Random(5)
    times: list[Any] = [0.003, 0.02, 0.7, 12.0, 45.0, 1, 3, None, "slow", True, 10**400]
    statuses: list[Any] = [200, "200", 404, 500.0]

    def point() -> MonitoringPoint:
        tags: dict[str, Any] = {"service": "handlers", "route": rng.choice(["GET:/a", "GET:/b", "POST:/c"])}
        if rng.random() < 0.9:
            tags["status_code"] = rng.choice(statuses)
        elapsed = rng.choice(times)
        return request_point(tags, {} if elapsed is None else {"execution_time": elapsed})

    metrics = build()
    batches = [[point() for _ in range(rng.randrange(1, 40))] for _ in range(12)]
    for batch in batches:
        metrics.observe(batch)
    counts, states, bad = _expected_requests(batches)
    assert samples(registry, "luna_requests_total") == counts
    assert set(samples(registry, "luna_request_duration_seconds_count")) == set(states)
    for labels, state in states.items():
        cumulative = 0.0
        les = [*(str(float(bound)) for bound in DURATION_BUCKETS), "+Inf"]
        for le, count in zip(les, state, strict=False):
            cumulative += count
            got = metric_value(registry, "luna_request_duration_seconds_bucket", dict(labels) | {"le": le})
            assert got == cumulative, (labels, le)
        assert metric_value(registry, "luna_request_duration_seconds_sum", dict(labels)) == pytest.approx(
            state[-1]
        )
    errors = samples(registry, "luna_metric_point_errors_total")
    assert errors.get((("metric", "luna_request_duration_seconds"),), 0.0) == bad > 0


def test_a_label_set_gets_its_histogram_with_its_first_execution_time(
    registry: CollectorRegistry, build: Build
) -> None:
    metrics = build()
    no_time = request_point({"service": "s", "route": "GET:/a", "status_code": 200}, {})
    metrics.observe([no_time, no_time])
    assert samples(registry, "luna_requests_total") == {
        (("luna_service", "s"), ("route", "GET:/a"), ("status_code", "200")): 2.0
    }
    assert samples(registry, "luna_request_duration_seconds_count") == {}
    timed = request_point({"service": "s", "route": "GET:/a", "status_code": 200}, {"execution_time": 0.2})
    for _ in range(3):  # the first makes the histogram's series, the others find it remembered
        metrics.observe([timed, no_time])
    labels = {"luna_service": "s", "route": "GET:/a"}
    assert metric_value(registry, "luna_request_duration_seconds_count", labels) == 3.0
    assert metric_value(registry, "luna_request_duration_seconds_sum", labels) == pytest.approx(0.6)
    assert (
        samples(registry, "luna_requests_total")[
            (("luna_service", "s"), ("route", "GET:/a"), ("status_code", "200"))
        ]
        == 8.0
    )


def request_point(tags: dict[str, Any], fields: dict[str, Any]) -> MonitoringPoint:
    return MonitoringPoint("requests", 1_700_000_000.0, tags, fields)

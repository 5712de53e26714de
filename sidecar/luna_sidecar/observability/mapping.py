"""Monitoring points -> Prometheus metrics.

The default mapping understands the original service's series:

- ``requests`` -> ``luna_requests_total{luna_service,route,status_code}`` and
  ``luna_request_duration_seconds{luna_service,route}`` (histogram of the ``execution_time`` field);
- ``errors`` -> ``luna_errors_total{luna_service,route,error_code}``;
- any other series -> ``luna_monitoring_points_total{series}``.

A tag named like a label that Prometheus' Kubernetes discovery gives every target (``service``,
``namespace``, ``pod``, ``container``, ``endpoint``, ``job``, ``instance``: :data:`TARGET_LABELS`)
becomes the label ``luna_<tag>``: scraped by a ServiceMonitor, a PodMonitor or pod annotations,
the series keep the same labels (a ServiceMonitor would otherwise turn ``service`` into
``exported_service`` and put the Kubernetes Service's name in its place).

A user mapping file adds metrics for other series and fields (see :func:`load_rules`). Every
metric keeps at most ``max_label_sets`` label combinations; points past that are counted in
``luna_metric_label_overflow_total{metric}``. ``request_id`` is never a label.

The metrics are plain dicts of cells (a one-element list per counter label set, a list of bucket
counts per histogram label set) read at scrape time: the hot path (a batch of points from intake)
costs a dict lookup and an add per point, with no locks (everything runs on the event loop), and a
``requests`` point whose raw label values were seen before finds both of its cells in one lookup.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from luna_plugins.monitoring import MonitoringPoint
from luna_sidecar.observability.request_cells import RequestCells

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FORBIDDEN_LABELS = frozenset({"request_id"})
#: labels Prometheus gives a meaning of its own (histogram buckets, summary quantiles)
RESERVED_LABELS = frozenset({"le", "quantile"})
#: labels scrape jobs put on every target (prometheus-operator's ServiceMonitor and PodMonitor,
#: the usual annotation jobs): a tag of that name is exposed as ``luna_<name>``
TARGET_LABELS = frozenset({"job", "instance", "namespace", "service", "pod", "container", "endpoint"})
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge", "histogram")
#: points observed between two folds of the waiting durations (besides the fold of every scrape):
#: bounds the floats held
FOLD_EVERY = 8192
#: the raw label values of a ``requests`` point, from its tags (KeyError when one is missing)
_REQUEST_KEY = itemgetter("service", "route", "status_code")


def exposed_label(tag: str) -> str:
    """The label a tag (or field) called ``tag`` is exposed as: ``luna_<tag>`` for a name in
    :data:`TARGET_LABELS`, else ``tag`` itself."""
    return f"luna_{tag}" if tag in TARGET_LABELS else tag


class MappingError(ValueError):
    """The mapping file is unusable; the message names the rule and the field."""


class _Overflow:
    """Counts points refused by a full metric (shared ``luna_metric_label_overflow_total``)."""

    def __init__(self, counter: Counter, errors: Counter) -> None:
        self._counter = counter
        self._errors = errors

    def overflow(self, metric: str, points: int = 1) -> None:
        self._counter.labels(metric).inc(points)

    def bad_value(self, metric: str, points: int = 1) -> None:
        self._errors.labels(metric).inc(points)


class PointMetric:
    """One metric family fed from points: a counter, gauge or histogram over label tuples."""

    def __init__(
        self,
        kind: str,
        name: str,
        help_text: str,
        labelnames: Sequence[str],
        *,
        max_label_sets: int,
        overflow: _Overflow,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.kind = kind
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self.max_label_sets = max_label_sets
        self.buckets = tuple(sorted(float(bound) for bound in buckets))
        self._overflow = overflow
        #: counter and gauge values, one cell (a one-element list) per label set: a caller that
        #: holds a cell updates it in place, without finding the label set again
        self._values: dict[tuple[str, ...], list[float]] = {}
        #: histogram states per label set: a count per bucket, then +Inf, then the sum
        self._histograms: dict[tuple[str, ...], list[float]] = {}

    def cell(self, key: tuple[str, ...]) -> list[float] | None:
        """The counter's or gauge's cell (``[value]``) for ``key``, made (at 0) when the label set
        still fits; None when it does not (nothing is counted: that is the caller's)."""
        found = self._values.get(key)
        if found is None and len(self._values) < self.max_label_sets:
            found = self._values[key] = [0.0]
        return found

    def histogram(self, key: tuple[str, ...], *, make: bool = True) -> list[float] | None:
        """The histogram's state for ``key`` (a count per bucket, +Inf, then the sum); unless it
        exists it is made empty when ``make`` and the label set still fits, else None (nothing
        is counted)."""
        found = self._histograms.get(key)
        if found is None and make and len(self._histograms) < self.max_label_sets:
            found = self._histograms[key] = [0.0] * (len(self.buckets) + 2)
        return found

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` to the counter for ``key`` (a tuple of label values)."""
        found = self.cell(key)
        if found is None:
            self._overflow.overflow(self.name)
        else:
            found[0] += amount

    def count(self, key: tuple[str, ...], points: int) -> None:
        """Add ``points`` to the counter for ``key``; when the label set does not fit, each of
        them counts as an overflow."""
        found = self.cell(key)
        if found is None:
            self._overflow.overflow(self.name, points)
        else:
            found[0] += points

    def set(self, key: tuple[str, ...], value: float) -> None:
        """Set the gauge for ``key``."""
        found = self.cell(key)
        if found is None:
            self._overflow.overflow(self.name)
        else:
            found[0] = value

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Record ``value`` in the histogram for ``key``."""
        state = self.histogram(key)
        if state is None:
            self._overflow.overflow(self.name)
            return
        state[bisect_left(self.buckets, value)] += 1
        state[-1] += value

    def family(self) -> Metric:
        """The metric as it is now, for the exposition."""
        labels = list(self.labelnames)
        if self.kind == "counter":
            counter = CounterMetricFamily(self.name, self.help, labels=labels)
            for key, (value,) in self._values.items():
                counter.add_metric(list(key), value)
            return counter
        if self.kind == "gauge":
            gauge = GaugeMetricFamily(self.name, self.help, labels=labels)
            for key, (value,) in self._values.items():
                gauge.add_metric(list(key), value)
            return gauge
        histogram = HistogramMetricFamily(self.name, self.help, labels=labels)
        bounds = [*(_bound_text(bound) for bound in self.buckets), "+Inf"]
        for key, state in self._histograms.items():
            cumulative, running = [], 0.0
            for bound, count in zip(bounds, state, strict=False):
                running += count
                cumulative.append((bound, running))
            histogram.add_metric(list(key), cumulative, sum_value=state[-1])
        return histogram


def exposed_names(kind: str, name: str) -> set[str]:
    """The sample names a metric of ``kind`` called ``name`` puts in the exposition."""
    if kind == "counter":
        base = name.removesuffix("_total")
        return {base, f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {name, f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def _bound_text(bound: float) -> str:
    return str(int(bound)) + ".0" if bound.is_integer() else repr(bound)


@dataclass(frozen=True)
class MappingRule:
    """A user mapping: points of ``series`` feed ``metric``; labels come from the named tags
    (or fields), the value from ``value_field`` (a counter without one counts points)."""

    series: str
    metric: PointMetric
    label_sources: tuple[str, ...]
    value_field: str | None

    def apply(self, point: MonitoringPoint) -> None:
        tags, fields = point.tags, point.fields
        key = tuple(
            str(tags[name]) if name in tags else str(fields.get(name, "")) for name in self.label_sources
        )
        metric = self.metric
        if self.value_field is None:
            metric.inc(key)
            return
        raw = fields.get(self.value_field, tags.get(self.value_field))
        if raw is None:
            return  # the point does not carry this field: nothing to record
        value = _number(raw)
        if value is None or (metric.kind == "counter" and value < 0):  # counters never go down
            metric._overflow.bad_value(metric.name)
        elif metric.kind == "counter":
            metric.inc(key, value)
        elif metric.kind == "gauge":
            metric.set(key, value)
        else:
            metric.observe(key, value)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return float(raw)
    if not isinstance(raw, int | float | str):
        return None
    try:
        value = float(raw)
    except (ValueError, OverflowError):  # not a number, or an int too large for a float
        return None
    return value if math.isfinite(value) else None


class PointMetrics(Collector):
    """The default mapping plus user rules; register it in the sidecar's registry."""

    def __init__(
        self,
        *,
        overflow_counter: Counter,
        error_counter: Counter,
        max_label_sets: int,
        rules: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._overflow = _Overflow(overflow_counter, error_counter)
        self.max_label_sets = max_label_sets
        self.requests = self._metric(
            "counter",
            "luna_requests_total",
            "Requests served, from the service's requests points.",
            (exposed_label("service"), "route", "status_code"),
        )
        self.duration = self._metric(
            "histogram",
            "luna_request_duration_seconds",
            "Request execution time, from requests points.",
            (exposed_label("service"), "route"),
        )
        self.errors = self._metric(
            "counter",
            "luna_errors_total",
            "Failed requests, from the service's errors points.",
            (exposed_label("service"), "route", "error_code"),
        )
        self.other_points = self._metric(
            "counter",
            "luna_monitoring_points_total",
            "Monitoring points of series without a built-in mapping.",
            ("series",),
        )
        #: raw (service, route, status_code) tag values -> the cells they are recorded in (label
        #: sets stay once admitted, so a cell stays valid)
        self._request_cells: dict[tuple[Any, Any, Any], RequestCells] = {}
        #: points observed since the durations were last folded
        self._unfolded = 0
        self.rules: dict[str, list[MappingRule]] = {}
        self._families = [self.requests, self.duration, self.errors, self.other_points]
        taken = {exposed for family in self._families for exposed in exposed_names(family.kind, family.name)}
        for index, rule in enumerate(rules):
            built = self._rule(index, rule, taken)
            self.rules.setdefault(built.series, []).append(built)
            if built.metric not in self._families:
                self._families.append(built.metric)

    def _metric(self, kind: str, name: str, help_text: str, labels: Sequence[str], **kw: Any) -> PointMetric:
        return PointMetric(
            kind, name, help_text, labels, max_label_sets=self.max_label_sets, overflow=self._overflow, **kw
        )

    def _rule(self, index: int, rule: Mapping[str, Any], taken: set[str]) -> MappingRule:
        where = f"metrics[{index}]"
        if not isinstance(rule, Mapping):
            raise MappingError(f"{where}: expected a mapping with series, name, type")
        unknown = set(rule) - {"series", "name", "type", "help", "labels", "value", "buckets"}
        if unknown:
            raise MappingError(f"{where}: unknown key(s) {sorted(unknown)}")
        series, name, kind = rule.get("series"), rule.get("name"), rule.get("type", "counter")
        if not isinstance(series, str) or not series:
            raise MappingError(f"{where}.series: required, the series name of the points to map")
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise MappingError(f"{where}.name: required, a Prometheus metric name (got {name!r})")
        if kind not in _KINDS:
            raise MappingError(f"{where}.type: one of {list(_KINDS)} (got {kind!r})")
        labels = rule.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise MappingError(f"{where}.labels: a list of tag or field names")
        if len(set(labels)) != len(labels):
            raise MappingError(f"{where}.labels: a label is listed twice in {labels}")
        for label in labels:
            if label in RESERVED_LABELS:
                raise MappingError(f"{where}.labels: {label!r} is reserved by Prometheus")
            if label in FORBIDDEN_LABELS:
                raise MappingError(
                    f"{where}.labels: {label!r} is unique per request and would explode the metric"
                )
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise MappingError(f"{where}.labels: {label!r} is not a valid Prometheus label name")
        value = rule.get("value")
        if value is not None and not isinstance(value, str):
            raise MappingError(f"{where}.value: the name of a numeric field")
        if kind != "counter" and value is None:
            raise MappingError(f"{where}.value: a {kind} needs the field that holds its value")
        buckets = rule.get("buckets", DURATION_BUCKETS)
        if (
            not isinstance(buckets, list | tuple)
            or not buckets
            or not all(isinstance(bound, int | float) and not isinstance(bound, bool) for bound in buckets)
        ):
            raise MappingError(f"{where}.buckets: a non-empty list of numbers")
        exposed_labels = [exposed_label(label) for label in labels]
        if len(set(exposed_labels)) != len(exposed_labels):
            raise MappingError(
                f"{where}.labels: {labels} would expose a label twice ({exposed_labels}: a tag named like a "
                "label Prometheus puts on every target is exposed as luna_<name>)"
            )
        exposed = exposed_names(kind, name)
        if exposed & taken:
            raise MappingError(f"{where}.name: metric {name!r} is defined twice")
        taken |= exposed
        help_text = rule.get("help") or f"Mapped from {series} points."
        metric = self._metric(kind, name, str(help_text), exposed_labels, buckets=buckets)
        return MappingRule(series, metric, tuple(labels), value)

    def observe(self, points: Sequence[MonitoringPoint]) -> None:
        """Record a batch of (already validated) points in every metric they map to.

        A ``requests`` point whose raw label values were seen before finds their
        :class:`RequestCells` with one lookup: a float duration waits there to be folded (see
        :meth:`fold`), anything else is recorded at once. The other points are first counted
        per distinct raw label values, then each label set is converted and recorded once (and a
        ``requests`` label set's cells remembered). The result is what recording point by point
        would give, overflow and bad-value counts included and counted at once (only which
        label sets are admitted when a metric reaches its cap within one batch may differ).
        """
        fresh: dict[tuple[Any, Any, Any], list[Any]] = {}  # raw labels not seen yet -> execution times
        errors: dict[tuple[Any, Any, Any], int] = {}
        others: dict[str, int] = {}
        rules = self.rules
        request_key = _REQUEST_KEY
        cells = self._request_cells
        bad = 0
        for point in points:
            series = point.series
            tags = point.tags
            if series == "requests":
                try:
                    key = request_key(tags)  # one call in C for the common point that has all three
                except KeyError:
                    key = (tags.get("service", ""), tags.get("route", ""), tags.get("status_code", ""))
                elapsed = point.fields.get("execution_time")
                cell = cells.get(key)
                if cell is None:
                    times = fresh.get(key)
                    if times is None:
                        fresh[key] = [elapsed]
                    else:
                        times.append(elapsed)
                elif elapsed.__class__ is float:  # the intake already refused non-finite floats
                    cell.durations.append(elapsed)
                else:
                    cell.total[0] += 1
                    if elapsed is not None:
                        number = _number(elapsed) if elapsed.__class__ is int else None
                        if number is None:
                            bad += 1
                        else:
                            state = cell.state
                            state[bisect_left(self.duration.buckets, number)] += 1
                            state[-1] += number
            elif series == "errors":
                key = (tags.get("service", ""), tags.get("route", ""), tags.get("error_code", ""))
                errors[key] = errors.get(key, 0) + 1
            else:
                others[series] = others.get(series, 0) + 1
            if rules:
                for rule in rules.get(series, ()):
                    rule.apply(point)
        if fresh:
            bad += self._record_requests(fresh)
        if bad:
            self._overflow.bad_value(self.duration.name, bad)
        for (service, route, code), count in errors.items():
            self.errors.count((str(service), str(route), str(code)), count)
        for series, count in others.items():
            self.other_points.count((series,), count)
        self._unfolded += len(points)
        if self._unfolded >= FOLD_EVERY:
            self.fold()

    def _record_requests(self, requests: dict[tuple[Any, Any, Any], list[Any]]) -> int:
        """Record ``requests`` points by raw label values (-> their execution times, None where
        a point has none); remember the cells of each raw label set that has both a counter and
        a histogram series. Returns the execution times that are no number."""
        bad = 0
        cells = self._request_cells
        for raw, times in requests.items():
            service, route, code = (str(value) for value in raw)
            seconds: list[float] = []
            for elapsed in times:
                if elapsed.__class__ is float:
                    seconds.append(elapsed)
                elif elapsed is not None:
                    number = _number(elapsed) if elapsed.__class__ is int else None
                    if number is None:
                        bad += 1
                    else:
                        seconds.append(number)
            count = self.requests.cell((service, route, code))
            if count is None:
                self._overflow.overflow(self.requests.name, len(times))
            else:
                count[0] += len(times)
            # a histogram series is made only for a label set that has a value to record
            state = self.duration.histogram((service, route), make=bool(seconds))
            if seconds:
                if state is None:
                    self._overflow.overflow(self.duration.name, len(seconds))
                else:
                    buckets = self.duration.buckets
                    for value in seconds:
                        state[bisect_left(buckets, value)] += 1
                        state[-1] += value
            if count is not None and state is not None:
                if len(cells) >= 4 * self.max_label_sets:
                    # raw values that are not labels (yet): keep the cache bounded
                    self.fold()
                    cells.clear()
                cells[raw] = RequestCells(count, state)
        return bad

    def fold(self) -> None:
        """Count the durations waiting in the remembered cells into the metrics."""
        buckets = self.duration.buckets
        for cell in self._request_cells.values():
            if cell.durations:
                cell.fold(buckets)
        self._unfolded = 0

    def collect(self) -> Iterator[Metric]:
        self.fold()  # a scrape shows every point observed before it
        for family in self._families:
            yield family.family()

    def describe(self) -> Iterator[Metric]:
        return iter(())


def load_rules(path: Path) -> list[Mapping[str, Any]]:
    """Read a mapping file: YAML (or JSON) with a top-level ``metrics`` list of rules::

        metrics:
          - series: temperature         # points of this series
            name: boiler_temperature_celsius
            type: gauge                 # counter (default) | gauge | histogram
            labels: [boiler]            # tag (or field) names (service, pod... as luna_service...)
            value: celsius              # the field holding the value (counters: optional)
            buckets: [10, 50, 90, 100]  # histograms only

    Raises :class:`MappingError` with the file name when it cannot be read or has no such list.
    """
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MappingError(f"cannot read metrics mapping {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"metrics mapping {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("metrics"), list):
        raise MappingError(f"metrics mapping {path}: expected a top-level 'metrics' list")
    rules: list[Mapping[str, Any]] = loaded["metrics"]
    return rules

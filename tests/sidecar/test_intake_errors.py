"""Bad input to the intake gets a 4xx with a JSON error that says what is wrong."""

from __future__ import annotations

import pytest

from tests.support.sidecar_harness import http, points

CASES = [
    ("monitoring_event", b"{not json", 400, "body is not valid JSON"),
    ("monitoring_event", b"[1, 2]", 422, "body must be a JSON object with a 'points' list, got array"),
    ("monitoring_event", b'{"points": {}}', 422, "points: required, must be an array, got object"),
    ("monitoring_event", b'{"points": [7]}', 422, "points[0]: must be an object, got number"),
    ("monitoring_event", b'{"points": [{"eventTime": 1}]}', 422, "points[0].series: required"),
    (
        "monitoring_event",
        b'{"points": [{"series": "s", "eventTime": "x"}]}',
        422,
        "points[0].eventTime: required, UNIX seconds as a number, got string",
    ),
    (
        "monitoring_event",
        b'{"points": [{"series": "s", "eventTime": 1, "tags": {"a": [1]}}]}',
        422,
        "points[0].tags.a: must be strings or numbers, got array",
    ),
    (
        "monitoring_event",
        b'{"points": [{"series": "s", "eventTime": 1, "fields": {"f": null}}]}',
        422,
        "points[0].fields.f: must be strings, numbers or booleans, got null",
    ),
    ("monitoring_event", b'{"points": [{"series": "s", "eventTime": NaN}]}', 400, "body is not valid JSON"),
    ("sending_event", b'{"events": [], "accountId": "a"}', 422, "handlerId: required, a string"),
    (
        "sending_event",
        b'{"events": [1], "handlerId": "h", "accountId": "a"}',
        422,
        "events[0]: must be an object",
    ),
    (
        "sending_event",
        b'{"events": [], "handlerId": 5, "accountId": "a"}',
        422,
        "handlerId: must be a string",
    ),
    ("no_such_event", b"{}", 404, "unknown event name 'no_such_event'"),
]


@pytest.fixture(scope="module")
def small_sidecar(tmp_path_factory):
    from tests.support.sidecar_harness import start_sidecar

    sidecar = start_sidecar(
        tmp_path_factory.mktemp("intake"),
        plugins={},
        active=[],
        args=["--max-body-bytes", "2000", "--max-batch-items", "5"],
    )
    yield sidecar
    sidecar.stop()


@pytest.mark.parametrize(("event", "raw", "status", "message"), CASES)
def test_bad_bodies_are_refused_with_a_reason(small_sidecar, event, raw, status, message) -> None:
    reply = http("POST", f"{small_sidecar.admin}/events/{event}", raw=raw)
    assert reply.status == status
    assert reply.headers["Content-Type"].startswith("application/json")
    assert message in reply.json()["error"]


def test_oversize_body_and_batch_are_refused(small_sidecar) -> None:
    big = http("POST", f"{small_sidecar.admin}/events/monitoring_event", raw=b" " * 5000)
    assert big.status == 413 and "limit of 2000 bytes" in big.json()["error"]
    many = small_sidecar.post_event("monitoring_event", points(6))
    assert many.status == 413 and "limit of 5 per request" in many.json()["error"]
    chunked = http(
        "POST",
        f"{small_sidecar.admin}/events/monitoring_event",
        raw=iter([b" " * 1500, b" " * 1500]),
        headers={"Transfer-Encoding": "chunked"},
    )  # type: ignore[arg-type]
    assert chunked.status == 413


def test_intake_survives_bad_input_and_counts_it(small_sidecar) -> None:
    assert small_sidecar.post_event("monitoring_event", points(2)).status == 202
    assert (
        small_sidecar.metric("luna_intake_requests_total", event_name="monitoring_event", status_code="422")
        >= 1
    )
    assert small_sidecar.metric("luna_intake_requests_total", event_name="unknown", status_code="404") >= 1
    assert http("GET", small_sidecar.admin + "/nothing-here").status == 404

"""SIGTERM: stop intake, drain the queues up to a deadline, close plugins, exit 0."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.sidecar.harness import http, points, wait_for
from tests.sidecar.plugin_sources import RECORDER


def test_sigterm_drains_queued_events_then_closes(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER},
        active=["recorder"],
        settings={"recorder": {"out": str(out), "delay": 0.2}},
    )
    for _ in range(10):
        assert sidecar.post_event("monitoring_event", points(1)).status == 202
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=20) == 0
    assert len(out.read_text().splitlines()) == 10, "every accepted batch was delivered before exit"
    assert (tmp_path / "points.jsonl.closed").exists()


def test_shutdown_deadline_bounds_the_drain(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER},
        active=["recorder"],
        settings={"recorder": {"out": str(out), "delay": 1.0}},
        args=["--shutdown-timeout", "1.5"],
    )
    for _ in range(10):
        sidecar.post_event("monitoring_event", points(1))
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(timeout=15) == 0
    delivered = len(out.read_text().splitlines()) if out.exists() else 0
    assert delivered < 10
    assert "were not delivered" in sidecar.log()


def test_intake_refuses_events_once_shutting_down(sidecar_factory, tmp_path: Path) -> None:
    out = tmp_path / "points.jsonl"
    sidecar = sidecar_factory(
        plugins={"recorder": RECORDER},
        active=["recorder"],
        settings={"recorder": {"out": str(out), "delay": 0.5}},
    )
    for _ in range(4):
        sidecar.post_event("monitoring_event", points(1))
    sidecar.process.send_signal(signal.SIGTERM)
    reply = wait_for(
        lambda: (
            (r := _try(lambda: sidecar.post_event("monitoring_event", points(1)))) and r.status != 202 and r
        ),
        what="intake to refuse",
    )
    assert reply.status == 503 and "shutting down" in reply.json()["error"]
    assert wait_for(
        lambda: (
            _try(lambda: http("GET", sidecar.metrics_url + "/readyz")) is None
            or http("GET", sidecar.metrics_url + "/readyz").status == 503
        ),
        what="not ready",
    )
    assert sidecar.process.wait(timeout=20) == 0
    assert len(out.read_text().splitlines()) == 4


def _try(call):  # the process may be gone by the time we ask
    try:
        return call()
    except OSError:
        return None

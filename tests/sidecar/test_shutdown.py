"""SIGTERM: stop intake, drain the queues up to a deadline, close plugins, exit 0."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.support.plugin_sources import RECORDER
from tests.support.sidecar_harness import http, points, wait_for


def delivered(out: Path) -> int:
    """Points the recorder received (it writes one line per callback; queued batches may be merged)."""
    if not out.exists():
        return 0
    return sum(len(json.loads(line)) for line in out.read_text().splitlines())


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
    assert delivered(out) == 10, "every accepted point was delivered before exit"
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
    assert delivered(out) < 10
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
    accepted = 4  # a post that arrives before the signal is handled is still accepted (and delivered)

    def refused() -> Any:
        nonlocal accepted
        reply = _try(lambda: sidecar.post_event("monitoring_event", points(1)))
        if reply is not None and reply.status == 202:
            accepted += 1
            return None
        return reply

    reply = wait_for(refused, what="intake to refuse")
    assert reply.status == 503 and "shutting down" in reply.json()["error"]
    assert wait_for(
        lambda: (
            _try(lambda: http("GET", sidecar.metrics_url + "/readyz")) is None
            or http("GET", sidecar.metrics_url + "/readyz").status == 503
        ),
        what="not ready",
    )
    assert sidecar.process.wait(timeout=20) == 0
    assert delivered(out) == accepted


def _try(call):  # the process may be gone by the time we ask
    try:
        return call()
    except OSError:
        return None

"""Random and malformed bodies against the real intake: never a 5xx, never a crash, the same
answer the reference validation gives, and the plugin receives exactly the accepted points."""

from __future__ import annotations

import json
import random
from pathlib import Path

from luna_sidecar.intake.payloads import PayloadError, decode_json, parse_points
from tests.support.intake_bodies import monitoring_bodies
from tests.support.plugin_sources import RECORDER
from tests.support.sidecar_harness import http, points, start_sidecar, wait_for

MAX_ITEMS = 5
BODIES = 400


def _expected(raw: bytes) -> tuple[int, str | None, int]:
    """The reference answer: status, error message (None when accepted), points accepted."""
    try:
        accepted = parse_points(decode_json(raw), max_items=MAX_ITEMS)
    except PayloadError as exc:
        return exc.status, exc.message, 0
    return 202, None, len(accepted)


def test_random_bodies_get_the_reference_answers(tmp_path: Path) -> None:
    out = tmp_path / "received.jsonl"
    sidecar = start_sidecar(
        tmp_path,
        plugins={"recorder": RECORDER},
        active=["recorder"],
        settings={"recorder": {"out": str(out)}},
        args=["--max-batch-items", str(MAX_ITEMS)],
    )
    try:
        url = f"{sidecar.admin}/events/monitoring_event"
        accepted_points = 0
        answers: dict[int, int] = {}
        for raw in monitoring_bodies(random.Random(7), BODIES):
            status, message, count = _expected(raw)
            reply = http("POST", url, raw=raw, headers={"Content-Type": "application/json"})
            assert reply.status == status, f"{raw[:200]!r}: {reply.status} {reply.text[:300]}"
            assert reply.headers["Content-Type"].startswith("application/json")
            if message is None:
                assert reply.json()["accepted"] == count
                accepted_points += count
            else:
                assert reply.json()["error"] == message
            answers[status] = answers.get(status, 0) + 1
        assert set(answers) == {202, 400, 413, 422}, answers
        assert http("GET", sidecar.metrics_url + "/healthz").status == 200
        # every accepted point reached the plugin, nothing else did
        assert sidecar.post_event("monitoring_event", points(2)).status == 202

        def received() -> int:
            if not out.exists():
                return 0
            return sum(len(json.loads(line)) for line in out.read_text().splitlines())

        wait_for(lambda: received() == accepted_points + 2, what="the accepted points at the plugin")
    finally:
        assert sidecar.stop() == 0

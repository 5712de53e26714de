"""A plugin that never returns cannot make the sidecar hold more than its queue bound.

Real sidecar process, real HTTP: 120 batches of 10,000 points into a plugin whose callback never
returns. Its queue keeps at most ``--queue-items`` points, the rest is dropped and counted, and
the process's resident memory (``VmRSS`` in ``/proc/PID/status``) grows by no more than the
bound the README documents: about 1 KiB per point held, plus the batch being parsed.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support import hostile_plugins as hostile
from tests.support.sidecar_harness import Sidecar, http, points, wait_for

QUEUE_ITEMS = 20_000
BATCH = 10_000
BATCHES = 120
#: generous per-point cost (measured: about 750 bytes per point held, parsed from JSON)
POINT_BYTES = 1536
#: interpreter, allocator arenas and whatever else a loaded machine makes vary
SLACK_BYTES = 32 * 2**20


def status_bytes(sidecar: Sidecar, field: str) -> int:
    """A ``kB`` line of ``/proc/PID/status`` (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{sidecar.process.pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{sidecar.process.pid}/status")


def test_a_burst_into_a_stalled_plugin_keeps_memory_within_the_queue_bound(sidecar_factory, tmp_path) -> None:
    sidecar = sidecar_factory(
        plugins={"stalled": hostile.STALLED_CALLBACK, "good_counter": hostile.GOOD_COUNTER},
        active=["stalled", "good_counter"],
        settings={"good_counter": {"closed": str(tmp_path / "closed")}},
        args=["--queue-items", str(QUEUE_ITEMS), "--callback-timeout", "1"],
    )
    body = json.dumps(points(BATCH, series="burst")).encode()

    def post() -> None:
        reply = http(
            "POST",
            sidecar.admin + "/events/monitoring_event",
            raw=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert reply.status == 202, reply.text

    def stalled() -> dict[str, Any]:
        info: dict[str, Any] = sidecar.plugin("stalled")["classes"][0]
        return info

    # (no plugin route is asked until the end: each request would add a point to the queues)
    post()  # the parser and the allocator warmed up; the stalled plugin is stuck in its callback
    wait_for(
        lambda: stalled()["queue"] == {"depth": 0, "items": BATCH, "capacity": QUEUE_ITEMS}, what="stuck"
    )
    before = status_bytes(sidecar, "VmRSS")
    for _ in range(BATCHES - 1):
        post()
    grown = status_bytes(sidecar, "VmRSS") - before
    peak = status_bytes(sidecar, "VmHWM") - before

    assert stalled()["queue"]["items"] == QUEUE_ITEMS, "one batch in the callback, one waiting"
    assert stalled()["droppedItems"] == (BATCHES - 2) * BATCH
    assert sidecar.metric("luna_plugin_dropped_items_total", plugin="stalled") == (BATCHES - 2) * BATCH
    assert sidecar.metric("luna_plugin_queue_items", plugin="stalled") == QUEUE_ITEMS
    wait_for(
        lambda: sidecar.get("/counted").json().get("burst") == BATCHES * BATCH,
        timeout=60,
        what="the good plugin to receive every point",
    )

    bound = (QUEUE_ITEMS + 2 * BATCH) * POINT_BYTES + SLACK_BYTES
    print(f"RSS grew {grown / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB); bound {bound / 2**20:.1f} MiB")
    assert grown <= bound
    assert peak <= bound

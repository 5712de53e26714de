"""The service-side sender (luna_plugins.client) against a real sidecar whose at-least-once queue
is full and refuses (``--queue-when-full refuse``): the intake answers 503, the sender keeps the
refused batches and sends them again, counts as sent only what the sidecar accepted (202), and
once the plugin's third party is back every event arrives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luna_plugins.client import SenderSettings, SidecarSender
from tests.support.sidecar_harness import Sidecar, wait_for

SINK = """
import json, os
from pathlib import Path

from luna_plugins.delivery import delivery_context
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

CONTROL = Path(os.environ["LUNA_TEST_CONTROL"])


class Sink(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, *rest, **kwargs):
        if (CONTROL / "fail").exists():
            raise RuntimeError("the third party is down")
        line = {"n": [e.asDict()["n"] for e in events], "id": delivery_context().id}
        with open(CONTROL / "sink.jsonl", "a") as sink:
            sink.write(json.dumps(line) + "\\n")
"""

PAD = "x" * 16 * 1024  # a 1 MiB queue holds about 60 of these events


def delivered(control: Path) -> list[dict[str, Any]]:
    sink = control / "sink.jsonl"
    if not sink.exists():
        return []
    text = sink.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


async def until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """``wait_for`` off the event loop, so the sender keeps sending meanwhile."""
    return await asyncio.to_thread(wait_for, condition, timeout=timeout, what=what)


async def test_batches_a_full_queue_refuses_are_kept_and_sent_again(
    sidecar_factory: Callable[..., Sidecar], tmp_path: Path
) -> None:
    control = tmp_path / "control"
    control.mkdir()
    (control / "fail").write_text("")
    sidecar = sidecar_factory(
        plugins={"sink": SINK},
        active=["sink"],
        env={"LUNA_TEST_CONTROL": str(control)},
        args=[
            "--delivery", "at-least-once",
            "--queue-dir", str(tmp_path / "queues"),
            "--queue-max-bytes", str(1024 * 1024),
            "--queue-when-full", "refuse",
            "--retry-max-elapsed", "0",  # retried forever: nothing becomes a dead letter
            "--retry-initial-backoff", "0.01",
            "--retry-max-backoff", "0.05",
            "--breaker-open-time", "0.2",
        ],
    )  # fmt: skip
    total = 150
    settings = SenderSettings(retry_initial=0.05, retry_max=0.2)
    async with SidecarSender(sidecar.admin, settings=settings) as sender:
        for n in range(total):
            sender.add_events([{"n": n, "pad": PAD}], handler_id="h", account_id="a", request_id=f"r{n}")
        await until(
            lambda: sidecar.metric("luna_intake_requests_total", status_code="503") >= 3,
            "the full queue to refuse batches (503) a few times",
        )
        # the queue is full and the plugin fails: nothing moves until its third party is back
        stats = sender.stats()
        pending = sidecar.plugin("sink")["classes"][0]["delivery"]["pending"]
        assert 0 < stats.events_sent < total
        assert stats.events_sent == pending  # sent means accepted: each is a batch in the queue
        assert stats.events_buffered == total - stats.events_sent
        assert (stats.events_dropped, stats.events_refused) == (0, 0)
        assert stats.retried >= 3
        assert delivered(control) == []

        (control / "fail").unlink()
        assert await sender.flush(timeout=60)
        stats = sender.stats()
        assert (stats.events_sent, stats.events_buffered, stats.events_dropped) == (total, 0, 0)
    lines = await until(
        lambda: len({n for line in delivered(control) for n in line["n"]}) == total and delivered(control),
        "every event delivered",
    )
    ids: dict[int, set[str]] = {}
    for line in lines:
        for n in line["n"]:
            ids.setdefault(n, set()).add(line["id"])
    assert sorted(ids) == list(range(total))
    assert all(len(found) == 1 for found in ids.values()), ids  # a redelivery keeps its id
    assert sidecar.metric("luna_intake_requests_total", status_code="202") == total

"""At-least-once delivery against real sidecar processes over HTTP: retries in order, SIGKILL and
restart on the same queue directory, damaged segment files, full queues, Retry-After, the
breaker and dead letters; and at-most-once, the default, as it was.

The plugin writes one line per attempt to a sink file; a control directory decides whether it
fails, asks for a Retry-After or is slow. Every wait is on a condition.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_harness import Sidecar, http, sidecar_command, wait_for

SINK_PLUGIN = """
import asyncio, json, os, time
from pathlib import Path

from luna_plugins.delivery import RetryLater, delivery_context
from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin

CONTROL = Path(os.environ["LUNA_TEST_CONTROL"])
TURNS = [0]  # loop turns seen: each call asks the loop to count one more


class Sink(BaseEventSendingPlugin):
    async def sendEvents(self, events, handlerId, accountId, requestId, createEventTime,
                         endEventTime, logger, *args, **kwargs):
        delivery = delivery_context()
        slow = CONTROL / "slow"
        if slow.exists():
            await asyncio.sleep(float(slow.read_text()))
        outcome = "ok"
        if (CONTROL / "fail").exists():
            outcome = "fail"
        elif (CONTROL / "retry_after").exists() and delivery.attempt == 1:
            outcome = "retry_after"
        line = {
            "req": requestId,
            "id": delivery.id if delivery else None,
            "attempt": delivery.attempt if delivery else None,
            "outcome": outcome,
            "t": time.monotonic(),
            "turns": TURNS[0],
        }
        asyncio.get_running_loop().call_soon(TURNS.__setitem__, 0, TURNS[0] + 1)
        with open(CONTROL / "sink.jsonl", "a") as sink:
            sink.write(json.dumps(line) + "\\n")
        if outcome == "fail":
            raise RuntimeError("the third party is down")
        if outcome == "retry_after":
            raise RetryLater(float((CONTROL / "retry_after").read_text()))
"""

FAST_RETRIES = [
    "--retry-initial-backoff",
    "0.01",
    "--retry-max-backoff",
    "0.05",
    "--breaker-open-time",
    "0.2",
]

#: retries that give a batch up (a dead letter) within 0.2 s, the breaker never in the way
GIVE_UP_FAST = [*FAST_RETRIES, "--retry-max-elapsed", "0.2", "--breaker-failures", "1000"]


def event(index: int, pad: int = 0) -> dict[str, Any]:
    events: list[dict[str, Any]] = [{"n": index}]
    if pad:
        events[0]["pad"] = "x" * pad
    return {
        "events": events,
        "handlerId": "h",
        "accountId": "a",
        "requestId": f"r{index}",
        "createEventTime": "2026-12-07T00:00:00+00:00",
        "endEventTime": "2026-12-07T00:00:01+00:00",
    }


class Harness:
    """One plugin ``sink`` under at-least-once delivery, its control directory and queue dir."""

    def __init__(self, tmp_path: Path, factory: Callable[..., Sidecar]) -> None:
        self.control = tmp_path / "control"
        self.control.mkdir()
        self.queue_dir = tmp_path / "queues"
        self.factory = factory

    def start(self, *args: str, durable: bool = True) -> Sidecar:
        flags = ["--delivery", "at-least-once", "--queue-dir", str(self.queue_dir)] if durable else []
        return self.factory(
            plugins={"sink": SINK_PLUGIN},
            active=["sink"],
            args=[*flags, *args],
            env={"LUNA_TEST_CONTROL": str(self.control)},
        )

    def set(self, name: str, value: str = "") -> None:
        (self.control / name).write_text(value)

    def clear(self, name: str) -> None:
        (self.control / name).unlink(missing_ok=True)

    def lines(self) -> list[dict[str, Any]]:
        sink = self.control / "sink.jsonl"
        if not sink.exists():
            return []
        return [json.loads(line) for line in sink.read_text().splitlines() if line.endswith("}")]

    def delivered(self) -> list[str]:
        """Requests delivered (outcome ok), in the order of their first delivery."""
        seen: dict[str, None] = {}
        for line in self.lines():
            if line["outcome"] == "ok":
                seen.setdefault(line["req"], None)
        return list(seen)

    def dead_letter_requests(self, sidecar: Sidecar) -> list[str]:
        """The requests whose batches are dead letters, in the order the sidecar lists them."""
        (sink,) = http("GET", sidecar.admin + "/plugins/sink/dead-letters").json()["classes"]
        request_of = {line["id"]: line["req"] for line in self.lines()}
        return [request_of[letter["deliveryId"]] for letter in sink["deadLetters"]]

    def queue_of(self, sidecar: Sidecar) -> dict[str, Any]:
        (sink,) = sidecar.plugin("sink")["classes"]
        return dict(sink["delivery"])


@pytest.fixture
def harness(tmp_path: Path, sidecar_factory: Callable[..., Sidecar]) -> Harness:
    return Harness(tmp_path, sidecar_factory)


def test_a_failing_sink_gets_every_accepted_event_in_order_once_it_recovers(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(*FAST_RETRIES, "--breaker-failures", "3", "--breaker-open-time", "0.2")
    accepted = []
    for index in range(60):
        reply = sidecar.post_event("sending_event", event(index))
        assert reply.status == 202, reply.text
        accepted.append(f"r{index}")
        if index == 29:
            wait_for(lambda: sum(line["outcome"] == "fail" for line in harness.lines()) >= 5, what="failures")
            harness.clear("fail")
    wait_for(lambda: len(harness.delivered()) == 60, timeout=60, what="every event delivered")
    assert harness.delivered() == accepted  # in order
    lines = harness.lines()
    ids = {}
    for line in lines:  # every attempt of one batch carries the same delivery id
        assert ids.setdefault(line["req"], line["id"]) == line["id"]
    assert len(set(ids.values())) == 60
    retried = [line for line in lines if line["outcome"] == "ok" and line["attempt"] > 1]
    assert retried and retried[0]["req"] == "r0"
    # the backlog is drained one batch per loop turn: a callback that never suspends does not
    # keep the loop (probes, the intake, the cursor's fsync rounds) from running in between
    turns = [line["turns"] for line in lines]
    assert all(later > earlier for earlier, later in itertools.pairwise(turns)), turns
    queue = harness.queue_of(sidecar)
    assert queue["delivered"] == 60 and queue["retried"] >= 5 and queue["breakerOpened"] >= 1
    wait_for(lambda: harness.queue_of(sidecar)["pending"] == 0, what="an empty queue")
    assert sidecar.metric("luna_plugin_events_total", plugin="sink", outcome="handled") == 60
    assert sidecar.metric("luna_plugin_delivery_retries_total", plugin="sink") >= 5
    assert sidecar.metric("luna_plugin_delivery_latency_seconds_count", plugin="sink") == 60
    assert sidecar.metric("luna_plugin_delivery_queue_batches", plugin="sink") == 0
    assert sidecar.stop() == 0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_long_outage_under_steady_load_keeps_memory_flat_and_delivers_everything(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(*FAST_RETRIES, "--retry-max-elapsed", "0", "--breaker-failures", "3")
    samples = {}
    for index in range(3000):  # 20 KB batches: 60 MB held on disk by the end of the outage
        assert sidecar.post_event("sending_event", event(index, pad=20_000)).status == 202
        if index + 1 in (2000, 2500, 3000):
            samples[index + 1] = rss_bytes(sidecar.process.pid)
    assert harness.delivered() == []
    # past the batches kept decoded for their first delivery (32 MiB of them), memory does not
    # follow the backlog: it stays on disk (the last 1000 batches would add about 40 MiB)
    growth = samples[3000] - samples[2000]
    assert growth < 16 * 1024 * 1024, {count: f"{rss / 2**20:.1f} MiB" for count, rss in samples.items()}
    assert harness.queue_of(sidecar)["pending"] == 3000
    harness.clear("fail")
    wait_for(lambda: len(harness.delivered()) == 3000, timeout=120, what="the backlog delivered")
    assert harness.delivered() == [f"r{index}" for index in range(3000)]
    assert sidecar.stop() == 0


def test_sigkill_right_after_the_202s_loses_nothing_and_duplicates_keep_their_id(harness: Harness) -> None:
    harness.set("slow", "0.02")
    first = harness.start()
    for index in range(100):
        assert first.post_event("sending_event", event(index)).status == 202
    first.process.send_signal(signal.SIGKILL)  # right after the last 202: most are still queued
    assert first.process.wait(timeout=30) == -signal.SIGKILL
    before = set(harness.delivered())
    assert len(before) < 100
    harness.clear("slow")
    second = harness.start()
    wait_for(
        lambda: len(harness.delivered()) == 100, timeout=60, what="every accepted event after the restart"
    )
    assert harness.delivered() == [f"r{index}" for index in range(100)]
    ids: dict[str, set[str]] = {}
    for line in harness.lines():
        ids.setdefault(line["req"], set()).add(line["id"])
    assert all(len(found) == 1 for found in ids.values()), ids  # a redelivery has the same id
    assert second.stop() == 0


def test_damaged_segment_files_are_quarantined_and_the_rest_delivered(harness: Harness) -> None:
    harness.set("fail")
    first = harness.start(*FAST_RETRIES)
    for index in range(10):
        assert first.post_event("sending_event", event(index)).status == 202
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=30)
    queue = harness.queue_dir / "sink" / "Sink"
    (queue / f"{99_999:020d}.seg").write_bytes(os.urandom(4096))
    (queue / "leftover.tmp").write_bytes(os.urandom(100))
    harness.clear("fail")
    second = harness.start(*FAST_RETRIES)
    wait_for(lambda: len(harness.delivered()) == 10, timeout=60, what="the intact batches delivered")
    assert harness.delivered() == [f"r{index}" for index in range(10)]
    assert harness.queue_of(second)["quarantinedSegments"] == 2
    assert second.metric("luna_plugin_delivery_quarantined_segments_total", plugin="sink") == 2
    assert len(list((queue / "quarantine").iterdir())) == 2
    assert second.log().count("is damaged") == 2  # logged once each
    assert http("GET", second.metrics_url + "/healthz").status == 200
    assert second.post_event("sending_event", event(10)).status == 202
    wait_for(lambda: "r10" in harness.delivered(), what="a new batch delivered after the quarantine")
    assert second.stop() == 0


@pytest.mark.parametrize("when_full", ["refuse", "dropNewest", "dropOldest"])
def test_a_full_queue_refuses_or_drops_and_counts_the_reason(harness: Harness, when_full: str) -> None:
    harness.set("fail")
    sidecar = harness.start(*FAST_RETRIES, "--queue-max-bytes", "1048576", "--queue-when-full", when_full)
    replies = [sidecar.post_event("sending_event", event(index, pad=100_000)) for index in range(20)]
    statuses = [reply.status for reply in replies]
    accepted = [f"r{index}" for index, reply in enumerate(replies) if reply.status == 202]
    if when_full == "refuse":
        assert 202 in statuses and 503 in statuses
        first_refused = statuses.index(503)
        assert set(statuses[first_refused:]) == {503}  # nothing drains while the sink fails
        assert "full" in replies[first_refused].json()["error"]
        assert sidecar.metric("luna_intake_requests_total", status_code="503") == statuses.count(503)
        assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink") == 0
        expected = accepted
    elif when_full == "dropNewest":
        assert set(statuses) == {202}
        dropped = [f"r{index}" for index, reply in enumerate(replies) if reply.json()["dropped"]]
        assert dropped and dropped == [f"r{index}" for index in range(20 - len(dropped), 20)]
        assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink", reason="queue_full") == len(
            dropped
        )
        expected = [name for name in accepted if name not in dropped]
    else:
        assert set(statuses) == {202}
        lost = sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink", reason="queue_full_oldest")
        assert lost >= 1
        expected = None  # the newest ones, see below
    harness.clear("fail")
    wait_for(lambda: harness.queue_of(sidecar)["pending"] == 0, timeout=60, what="the queue drained")
    delivered = harness.delivered()
    if expected is None:
        assert delivered == [f"r{index}" for index in range(20 - len(delivered), 20)]
        assert len(delivered) == 20 - lost
    else:
        assert delivered == expected
    assert sidecar.stop() == 0


def test_retry_after_from_the_plugin_is_respected(harness: Harness) -> None:
    harness.set("retry_after", "1.0")
    sidecar = harness.start(*FAST_RETRIES)
    assert sidecar.post_event("sending_event", event(0)).status == 202
    wait_for(
        lambda: harness.delivered() == ["r0"], timeout=30, what="the batch delivered on its second attempt"
    )
    first, second = harness.lines()
    assert (first["outcome"], first["attempt"], second["outcome"], second["attempt"]) == (
        "retry_after",
        1,
        "ok",
        2,
    )
    assert second["t"] - first["t"] >= 0.99  # not the 0.01 s backoff
    assert sidecar.stop() == 0


def test_exhausted_batches_become_dead_letters_that_replay_delivers(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(
        *FAST_RETRIES, "--retry-max-elapsed", "0.3", "--breaker-failures", "3", "--breaker-open-time", "0.1"
    )
    for index in range(3):
        assert sidecar.post_event("sending_event", event(index)).status == 202
    dead_letters_url = sidecar.admin + "/plugins/sink/dead-letters"

    def dead() -> list[dict[str, Any]]:
        reply = http("GET", dead_letters_url)
        assert reply.status == 200, reply.text
        (sink,) = reply.json()["classes"]
        return list(sink["deadLetters"])

    letters = wait_for(lambda: len(dead()) == 3 and dead(), timeout=30, what="three dead letters")
    attempted = {line["req"]: line["id"] for line in harness.lines()}
    assert [letter["deliveryId"] for letter in letters] == [attempted[f"r{index}"] for index in range(3)]
    assert all(letter["attempts"] >= 2 and "third party is down" in letter["error"] for letter in letters)
    queue = harness.queue_of(sidecar)
    assert queue["deadLettered"] == 3 and queue["pending"] == 0 and queue["breakerOpened"] >= 1
    assert sidecar.metric("luna_plugin_dead_lettered_batches_total", plugin="sink") == 3
    assert sidecar.metric("luna_plugin_dead_letters", plugin="sink") == 3
    assert harness.delivered() == []
    cli = [*sidecar_command(), "dead-letters", "list", "sink", "--admin", sidecar.admin]
    listed = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [letter["deliveryId"] for letter in json.loads(listed.stdout)["classes"][0]["deadLetters"]] == [
        letter["deliveryId"] for letter in letters
    ]
    unknown = subprocess.run(
        [*cli[:-3], "nope", *cli[-2:]], capture_output=True, text=True, timeout=60, check=False
    )
    assert unknown.returncode == 1 and "no durable queue" in unknown.stderr

    harness.clear("fail")
    replay = http("POST", dead_letters_url + "/replay")
    assert (replay.status, replay.json()["replayed"]) == (200, 3)
    wait_for(lambda: len(harness.delivered()) == 3, timeout=30, what="the replayed batches delivered")
    assert harness.delivered() == ["r0", "r1", "r2"]
    ok_ids = {line["req"]: line["id"] for line in harness.lines() if line["outcome"] == "ok"}
    assert ok_ids == attempted  # a replayed batch keeps its delivery id
    assert dead() == []

    harness.set("fail")
    assert sidecar.post_event("sending_event", event(3)).status == 202
    wait_for(lambda: len(dead()) == 1, timeout=30, what="one more dead letter")
    discard = http("POST", dead_letters_url + "/discard", body={"names": [dead()[0]["name"]]})
    assert (discard.status, discard.json()["discarded"]) == (200, 1)
    assert dead() == []
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink", reason="discarded") == 1
    assert http("GET", sidecar.admin + "/plugins/nope/dead-letters").status == 404
    assert sidecar.stop() == 0


def test_dead_letters_keep_within_their_bound_and_count_what_they_remove(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(*GIVE_UP_FAST, "--dead-letters-max-bytes", "1048576")
    for index in range(5):
        assert sidecar.post_event("sending_event", event(index, pad=300_000)).status == 202
    wait_for(lambda: harness.queue_of(sidecar)["pending"] == 0, timeout=60, what="every batch given up")
    # three of ~300 KB fit in 1 MiB: the newest
    assert harness.dead_letter_requests(sidecar) == ["r2", "r3", "r4"]
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink", reason="dead_letters_full") == 2
    queue = harness.queue_of(sidecar)
    assert (queue["deadLettered"], queue["deadLetters"], queue["dropped"]) == (5, 3, {"dead_letters_full": 2})
    assert sidecar.log().count("dead letters of sink (Sink) are bounded to 1048576 bytes") == 2
    held = sum(path.stat().st_size for path in (harness.queue_dir / "sink" / "Sink" / "dead").iterdir())
    assert held <= 1048576
    assert sidecar.stop() == 0


def test_a_dead_letter_that_cannot_be_written_stays_in_the_queue_until_it_can(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(*GIVE_UP_FAST)
    dead_dir = harness.queue_dir / "sink" / "Sink" / "dead"
    assert sidecar.post_event("sending_event", event(0)).status == 202
    wait_for(lambda: harness.queue_of(sidecar)["deadLettered"] == 1, what="a first dead letter")
    dead_dir.rename(dead_dir.with_name("dead.aside"))
    dead_dir.write_text("not a directory")  # every write of a dead letter fails
    for index in (1, 2):
        assert sidecar.post_event("sending_event", event(index)).status == 202
    wait_for(lambda: sidecar.log().count("cannot write batch") >= 2, timeout=30, what="the failure logged")
    queue = harness.queue_of(sidecar)
    assert (queue["deadLettered"], queue["pending"]) == (1, 2)  # nothing skipped, nothing lost
    dead_dir.unlink()
    dead_dir.with_name("dead.aside").rename(dead_dir)
    wait_for(lambda: harness.queue_of(sidecar)["deadLettered"] == 3, timeout=30, what="both written")
    assert harness.queue_of(sidecar)["pending"] == 0
    assert harness.dead_letter_requests(sidecar) == ["r0", "r1", "r2"]
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink") == 0
    harness.clear("fail")
    assert sidecar.post_event("sending_event", event(3)).status == 202
    wait_for(lambda: harness.delivered() == ["r3"], what="the worker still delivering")
    assert sidecar.stop() == 0


@pytest.fixture
def small_disk(harness: Harness) -> Iterator[Path]:
    """The queue directory on a 2 MiB tmpfs of its own, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("mounting a small file system for the queue directory needs root")
        pytest.skip("mounting a small file system for the queue directory needs root")
    harness.queue_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "luna-test-queues", str(harness.queue_dir)],
        check=True,
        capture_output=True,
    )
    try:
        yield harness.queue_dir
    finally:
        subprocess.run(["umount", "-l", str(harness.queue_dir)], check=False, capture_output=True)


def test_a_full_disk_answers_503_loses_nothing_accepted_and_recovers_once_delivered(
    harness: Harness, small_disk: Path
) -> None:
    harness.set("fail")
    sidecar = harness.start(*FAST_RETRIES, "--breaker-failures", "1000", "--queue-max-bytes", str(64 << 20))
    assert "has" in (harness.queue_of(sidecar)["capacityWarning"] or "")  # 2 MiB for a 64 MiB bound
    replies = []
    for index in range(40):  # about 19 batches of 100 KB fit
        reply = sidecar.post_event("sending_event", event(index, pad=100_000))
        replies.append(reply)
        if reply.status == 503:
            break
    refused = replies[-1]
    assert refused.status == 503, [reply.status for reply in replies]
    assert "cannot be written" in refused.json()["error"] and "No space left" in refused.json()["error"]
    accepted = [f"r{index}" for index, reply in enumerate(replies) if reply.status == 202]
    assert len(accepted) == len(replies) - 1 >= 5
    assert http("GET", sidecar.metrics_url + "/healthz").status == 200
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink") == 0

    harness.clear("fail")
    wait_for(lambda: harness.delivered() == accepted, timeout=60, what="every accepted batch delivered")

    def sent_again(index: int) -> bool:  # as the service's client does with a 503
        return sidecar.post_event("sending_event", event(index, pad=100_000)).status == 202

    # the delivered segment's space comes back: new batches are taken again
    next_index = len(replies) - 1
    for index in range(next_index, next_index + 25):
        wait_for(lambda index=index: sent_again(index), timeout=30, what=f"batch {index} taken")
    wait_for(
        lambda: len(harness.delivered()) == next_index + 25, timeout=60, what="the new batches delivered"
    )
    assert harness.delivered() == [f"r{index}" for index in range(next_index + 25)]
    assert sidecar.stop() == 0


def test_at_most_once_stays_the_default(harness: Harness) -> None:
    sidecar = harness.start(durable=False)
    assert sidecar.post_event("sending_event", event(0)).status == 202
    wait_for(lambda: harness.delivered() == ["r0"], what="the batch delivered")
    (line,) = harness.lines()
    assert (line["id"], line["attempt"]) == (None, None)  # no delivery context
    (sink,) = sidecar.plugin("sink")["classes"]
    assert "delivery" not in sink
    assert not any(name.startswith("luna_plugin_delivery") for name in sidecar.series_of("sink"))
    assert http("GET", sidecar.admin + "/plugins/sink/dead-letters").status == 404
    harness.set("fail")
    assert sidecar.post_event("sending_event", event(1)).status == 202
    wait_for(lambda: sidecar.plugin("sink")["classes"][0]["failed"] == 1, what="the failure counted")
    assert len(harness.lines()) == 2  # not retried
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink", reason="failed") == 1
    assert sidecar.stop() == 0


def test_at_least_once_needs_a_queue_dir(tmp_path: Path) -> None:
    from luna_sidecar.config import ConfigError, resolve

    with pytest.raises(ConfigError, match="--queue-dir"):
        resolve({"delivery": "at-least-once"}, {})
    assert resolve({"delivery": "at-least-once", "queue_dir": str(tmp_path)}, {}).queue_dir == tmp_path


def test_a_reloaded_version_takes_the_queue_over(harness: Harness) -> None:
    harness.set("fail")
    sidecar = harness.start(*FAST_RETRIES)
    for index in range(5):
        assert sidecar.post_event("sending_event", event(index)).status == 202
    wait_for(lambda: any(line["outcome"] == "fail" for line in harness.lines()), what="a failed attempt")
    old_hash = sidecar.plugin("sink")["codeHash"]
    sidecar.write_plugin("sink", SINK_PLUGIN + "\n# version 2\n")
    wait_for(
        lambda: sidecar.plugin("sink")["codeHash"] != old_hash, timeout=30, what="the new version running"
    )
    harness.clear("fail")
    for index in range(5, 8):
        assert sidecar.post_event("sending_event", event(index)).status == 202
    wait_for(lambda: len(harness.delivered()) == 8, timeout=30, what="every batch, old and new")
    assert harness.delivered() == [f"r{index}" for index in range(8)]
    assert sidecar.metric("luna_plugin_dropped_batches_total", plugin="sink") == 0
    assert sidecar.stop() == 0

"""The Coalescer: one pass per service at a time, triggers merged, full before status, retries."""

from __future__ import annotations

import asyncio

from luna_operator.errors import PassIncompleteError
from luna_operator.scheduling import Coalescer, PassKind
from tests.support.runtime import wait_until

A, B = ("ns", "a"), ("ns", "b")


class Recorder:
    """Work that records its calls and can be made to wait or fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, str], PassKind]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.failures: list[Exception] = []
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, key: tuple[str, str], kind: PassKind) -> None:
        self.calls.append((key, kind))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
            if self.failures:
                raise self.failures.pop(0)
        finally:
            self.running -= 1


async def test_a_burst_of_triggers_is_one_pass_and_full_includes_status() -> None:
    work = Recorder()
    passes = Coalescer(work, backoff=0.01)
    passes.open()
    for _ in range(50):
        passes.trigger(A, "status", delay=0.02)
    passes.trigger(A, "full", delay=0.02)
    passes.trigger(B, "status", delay=0.02)
    assert passes.pending() == {"full": 1, "status": 1}
    await wait_until(lambda: len(work.calls) == 2 and not passes.pending()["full"], what="two passes")
    await asyncio.sleep(0.05)
    assert sorted(work.calls) == [(A, "full"), (B, "status")]


async def test_triggers_during_a_pass_cause_exactly_one_more_and_never_two_at_once() -> None:
    work = Recorder()
    work.release.clear()
    passes = Coalescer(work, backoff=0.01)
    passes.open()
    passes.trigger(A, "status", delay=0)
    await wait_until(lambda: work.running == 1, what="the first pass to start")
    assert passes.running() == 1
    for _ in range(10):
        passes.trigger(A, "status", delay=0)
    work.release.set()
    await wait_until(lambda: len(work.calls) == 2, what="the second pass")
    await asyncio.sleep(0.05)
    assert work.calls == [(A, "status"), (A, "status")] and work.most_at_once == 1


async def test_passes_wait_until_the_view_is_complete() -> None:
    work = Recorder()
    passes = Coalescer(work, backoff=0.01)
    passes.trigger(A, "full", delay=0)
    await asyncio.sleep(0.05)
    assert work.calls == [] and passes.pending() == {"full": 1, "status": 0}
    passes.open()
    await wait_until(lambda: work.calls == [(A, "full")], what="the pass once open")


async def test_a_failed_pass_is_retried_with_its_kind_and_observed() -> None:
    work = Recorder()
    work.failures = [PassIncompleteError("the API is away"), RuntimeError("a bug")]
    seen: list[tuple[PassKind, str]] = []
    passes = Coalescer(
        work, backoff=0.01, observer=lambda key, kind, outcome, seconds: seen.append((kind, outcome))
    )
    passes.open()
    passes.trigger(A, "status", delay=0)
    await wait_until(lambda: len(seen) == 3, what="two failures, then success")
    assert seen == [("status", "incomplete"), ("status", "error"), ("status", "ok")]
    assert passes.pending() == {"full": 0, "status": 0}


async def test_stop_cancels_what_runs_and_what_waits() -> None:
    work = Recorder()
    work.release.clear()
    passes = Coalescer(work, backoff=0.01)
    passes.open()
    passes.trigger(A, "full", delay=0)
    passes.trigger(B, "full", delay=60)
    await wait_until(lambda: work.running == 1, what="a pass to run")
    await passes.stop()
    assert passes.pending() == {"full": 0, "status": 0} and passes.running() == 0


async def test_a_pass_may_ask_to_run_again_later_as_a_full_pass() -> None:
    calls: list[PassKind] = []

    async def work(key: tuple[str, str], kind: PassKind) -> tuple[PassKind, float] | None:
        calls.append(kind)
        return ("full", 0.01) if len(calls) < 3 else None  # refused twice, then allowed

    passes = Coalescer(work, backoff=0.01)
    passes.open()
    passes.trigger(A, "status", delay=0)
    await wait_until(lambda: len(calls) == 3, what="the pass asked for again")
    await asyncio.sleep(0.05)
    assert calls == ["status", "full", "full"] and passes.pending() == {"full": 0, "status": 0}

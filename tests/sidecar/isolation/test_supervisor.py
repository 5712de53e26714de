"""The supervisor of the feed's tasks: restart with backoff, liveness, stop."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter

from luna_sidecar.isolation.supervisor import Supervisor
from tests.support.runtime import metric_value, wait_until


def restarts_counter() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("restarts", "restarts", registry=registry)


async def test_a_failing_task_is_restarted_with_backoff_and_fails_liveness() -> None:
    registry, restarts = restarts_counter()
    runs: list[float] = []

    async def fails() -> None:
        runs.append(asyncio.get_running_loop().time())
        raise RuntimeError("broken feed")

    supervisor = Supervisor("feed", fails, limit=0.2, restarts=restarts, min_backoff=0.02, max_backoff=0.08)
    supervisor.start()
    try:
        await wait_until(lambda: len(runs) >= 4, what="restarts")
        assert supervisor._backoff == 0.08, "the backoff doubled up to its maximum"
        await wait_until(lambda: not supervisor.live()[0], what="liveness to fail")
        assert (
            "feed keeps failing" in supervisor.live()[1]
            and "RuntimeError: broken feed" in supervisor.live()[1]
        )
        assert metric_value(registry, "restarts_total") >= 3
    finally:
        await supervisor.stop()
    count = len(runs)
    await asyncio.sleep(0.2)
    assert len(runs) == count, "stopped: no more restarts"


async def test_a_task_that_stays_up_after_a_failure_counts_as_recovered() -> None:
    _, restarts = restarts_counter()
    runs = 0

    async def fails_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("once")
        await asyncio.Event().wait()

    supervisor = Supervisor(
        "feed", fails_once, limit=0.1, restarts=restarts, min_backoff=0.01, stable_after=0.05
    )
    supervisor.start()
    try:
        await wait_until(lambda: runs == 2, what="the restart")
        await asyncio.sleep(0.2)  # up for longer than stable_after and the limit
        assert supervisor.live() == (True, "ok")
    finally:
        await supervisor.stop()

"""Calling plugin code under a deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from luna_sidecar.isolation.timeouts import call_with_timeout
from tests.support.runtime import wait_until


async def test_sync_function_result_is_returned() -> None:
    assert await call_with_timeout(lambda a, b: a + b, 2, 3, timeout=0.1) == 5


async def test_sync_function_exception_propagates() -> None:
    def fail() -> None:
        raise LookupError("sync")

    with pytest.raises(LookupError, match="sync"):
        await call_with_timeout(fail, timeout=0.1)


async def test_async_function_result_is_returned() -> None:
    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    assert await call_with_timeout(double, 21, timeout=1.0) == 42


async def test_async_exception_propagates_unchanged() -> None:
    class PluginError(Exception):
        pass

    async def fail() -> None:
        raise PluginError("async")

    with pytest.raises(PluginError, match="async"):
        await call_with_timeout(fail, timeout=1.0)


async def test_sync_function_returning_awaitable_is_awaited() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()
    loop.call_soon(future.set_result, "from future")
    assert await call_with_timeout(lambda: future, timeout=1.0) == "from future"


async def test_timeout_cancels_the_coroutine() -> None:
    state = {"cancelled": False}

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"0\.05 s"):
        await call_with_timeout(hang, timeout=0.05)
    assert time.monotonic() - started < 1.0
    await wait_until(lambda: state["cancelled"], what="the plugin coroutine to be cancelled")


async def test_coroutine_swallowing_cancellation_does_not_hold_the_caller() -> None:
    release = asyncio.Event()
    state = {"cancel_seen": 0, "finished": False}

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                state["cancel_seen"] += 1  # swallowed: keeps running
        state["finished"] = True

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await call_with_timeout(stubborn, timeout=0.05)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the caller was held for {elapsed:.2f} s"
    await wait_until(lambda: state["cancel_seen"] >= 1, what="the cancellation to reach the plugin")
    assert state["finished"] is False
    release.set()
    await wait_until(lambda: state["finished"], what="the stubborn coroutine to end")


async def test_cancelling_the_caller_cancels_the_plugin() -> None:
    state = {"cancelled": False, "started": False}

    async def hang() -> None:
        state["started"] = True
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    caller = asyncio.create_task(call_with_timeout(hang, timeout=10.0))
    await wait_until(lambda: state["started"], what="the plugin to start")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await wait_until(lambda: state["cancelled"], what="the plugin to be cancelled with its caller")

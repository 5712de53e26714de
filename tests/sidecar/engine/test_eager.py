"""Starting a callback at once and awaiting the rest later, in another task."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from luna_sidecar.engine import eager


async def test_a_callback_that_does_not_await_finishes_at_once() -> None:
    seen: list[int] = []

    async def callback(value: int) -> None:
        seen.append(value)

    assert eager.start(callback, 1) is None
    assert seen == [1]
    assert eager.start(lambda value: seen.append(value), 2) is None, "plain functions too"
    assert seen == [1, 2]


async def test_the_rest_runs_in_the_task_that_awaits_it() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def callback() -> str:
        steps.append(f"first in {asyncio.current_task().get_name()}")  # type: ignore[union-attr]
        await gate.wait()
        await asyncio.sleep(0)  # a bare yield is handed over too
        steps.append(f"rest in {asyncio.current_task().get_name()}")  # type: ignore[union-attr]
        return "done"

    rest = eager.start(callback)
    assert rest is not None and steps == ["first in " + asyncio.current_task().get_name()]  # type: ignore[union-attr]

    async def awaiting() -> Any:
        return await rest

    task = asyncio.create_task(awaiting(), name="worker")
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set()
    assert await task == "done"
    assert steps[1] == "rest in worker"


async def test_cancelling_the_awaiting_task_reaches_the_callback() -> None:
    seen: list[str] = []

    async def callback() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("finally")

    rest = eager.start(callback)
    assert rest is not None

    async def awaiting() -> None:
        await rest

    task = asyncio.create_task(awaiting())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled", "finally"]


async def test_a_timeout_around_the_rest_works_like_around_the_whole() -> None:
    async def callback() -> None:
        await asyncio.sleep(10)

    rest = eager.start(callback)
    assert rest is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await rest


async def test_errors_come_out_where_they_happen() -> None:
    async def fails_at_once() -> None:
        raise ValueError("first step")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("rest")

    with pytest.raises(ValueError, match="first step"):
        eager.start(fails_at_once)
    rest = eager.start(fails_later)
    assert rest is not None
    with pytest.raises(KeyError):
        await rest


async def test_other_awaitables_are_left_to_the_task() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    assert eager.start(lambda: future) is future
    future.set_result(3)
    assert await future == 3


async def test_closing_an_abandoned_rest_runs_its_finally(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def callback() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("finally")

    rest = eager.start(callback)
    assert isinstance(rest, eager.Continuation)
    rest.close(logging.getLogger("luna.tests.eager"))
    assert seen == ["finally"]

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # awaits while being closed

    other = eager.start(stubborn)
    assert isinstance(other, eager.Continuation)
    with caplog.at_level(logging.WARNING):
        other.close(logging.getLogger("luna.tests.eager"))
    assert "did not close cleanly" in caplog.text

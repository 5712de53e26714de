"""Starting a plugin callback at once: its first step runs where the batch is offered, the rest
(if it awaits something) later, in the plugin's worker task.

A callback that never suspends (a monitoring plugin that counts, filters or buffers points)
thereby finishes without a task, a timer or a turn of the event loop, while its batch is still
in the CPU's caches. One that awaits (I/O to a third party) is handed over to its worker, which
awaits the rest under the callback timeout as if it had started it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from asyncio.tasks import _enter_task, _leave_task  # what asyncio's own tasks use for each step
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any


def start_as(
    task: asyncio.Task[Any], context: contextvars.Context, callback: Callable[..., object], *args: Any
) -> Awaitable[Any] | None:
    """:func:`start` as ``task`` and in ``context``: meanwhile ``asyncio.current_task()`` is
    ``task`` and context variables are ``context``'s, so what the callback opens before its first
    await (a timeout, a task group, an HTTP client's timer) belongs to the task that will await
    the rest. Only while no task runs (a protocol or timer callback), and ``task`` is suspended."""
    loop = task.get_loop()
    _enter_task(loop, task)
    try:
        return context.run(start, callback, *args)
    finally:
        _leave_task(loop, task)


def start(callback: Callable[..., object], *args: Any) -> Awaitable[Any] | None:
    """Call ``callback(*args)``; when it returns a coroutine, run that up to its first suspension.

    Returns None when the call finished, else what is left to await: the rest of the coroutine
    (a :class:`Continuation`), or the awaitable ``callback`` returned when it is not a coroutine
    (it is not started). Raises whatever the callback raised.
    """
    result = callback(*args)
    if result is None:
        return None
    if asyncio.iscoroutine(result):
        try:
            pending = result.send(None)
        except StopIteration:
            return None
        return Continuation(result, pending)
    if isinstance(result, Awaitable):
        return result
    return None


class Continuation:
    """The rest of a coroutine whose first step already ran and yielded ``pending`` (the future it
    waits for, or None for a bare yield) to the event loop. Awaiting it in a task hands
    ``pending`` to that task and then drives the coroutine on, passing in what the task sends or
    throws (its cancellation included), exactly as if the task had started the coroutine."""

    __slots__ = ("_cancelled", "_coroutine", "_pending")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coroutine = coroutine
        self._pending = pending
        self._cancelled = False

    def cancelled_meanwhile(self) -> Continuation:
        """Its task was cancelled before it awaited this (a timer the coroutine opened fired):
        awaiting it starts by throwing ``CancelledError`` into the coroutine, where the task
        would have thrown it."""
        self._cancelled = True
        return self

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, pending = self._coroutine, self._pending
        if self._cancelled:
            try:
                pending = coroutine.throw(asyncio.CancelledError())
            except StopIteration as finished:
                return finished.value
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # the task's cancellation, or its complaint about a bad yield
                try:
                    pending = coroutine.throw(exc)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    pending = coroutine.send(sent)
                except StopIteration as finished:
                    return finished.value

    def close(self, logger: logging.Logger) -> None:
        """Abandon it without resuming (its worker stopped first): the coroutine gets
        ``GeneratorExit`` to run its ``finally`` blocks; whatever it does instead is logged."""
        try:
            self._coroutine.close()
        except BaseException as exc:  # a coroutine that awaits again or raises: nothing left to do
            logger.warning("a callback cut short did not close cleanly: %s: %s", type(exc).__name__, exc)

"""Starting a plugin callback at once: its first step runs where the batch is offered, the rest
(if it awaits something) later, in the plugin's worker task.

A callback that never suspends (a monitoring plugin that counts, filters or buffers points)
thereby finishes without a task, a timer or a turn of the event loop, while its batch is still
in the CPU's caches. One that awaits (I/O to a third party) is handed over to its worker, which
awaits the rest under the callback timeout as if it had started it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any


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

    __slots__ = ("_coroutine", "_pending")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coroutine = coroutine
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, pending = self._coroutine, self._pending
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

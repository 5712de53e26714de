"""Running plugin code that cannot be awaited (its import, its constructors) in a thread of its
own, under a deadline, so a plugin that blocks there stalls neither routes, intake nor probes.

A thread cannot be stopped from outside. One that misses its deadline is abandoned: the caller
gets ``TimeoutError`` at once, the thread's result is discarded whenever it comes, and the
thread is counted in :class:`~luna_sidecar.isolation.leftovers.Leftovers` until it ends. What such a
thread costs while it runs: its stack (mostly untouched virtual memory), whatever the plugin
code holds, a share of the GIL if it computes rather than waits, and, if it is stuck inside an
``import`` of another module, that module's import lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from luna_sidecar.isolation.leftovers import THREAD, Leftover, Leftovers
from luna_sidecar.isolation.timeouts import escaped

T = TypeVar("T")


@dataclass
class _Handover:
    """Shared by the thread and the waiting coroutine, under ``lock``."""

    lock: threading.Lock
    finished: bool = False
    abandoned: int | None = None
    """Id of the leftover entry once the waiter gave up."""


async def run_in_thread(
    work: Callable[[], T],
    *,
    timeout: float,
    leftovers: Leftovers,
    plugin: str,
    code_hash: str,
    what: str,
) -> T:
    """Run ``work()`` in a new daemon thread and return its result within ``timeout`` seconds.

    Raises what ``work`` raised (a ``BaseException`` beyond ``Exception`` arrives as
    :class:`~luna_sidecar.isolation.timeouts.PluginEscapeError`), or ``TimeoutError``: the thread is then
    abandoned and its late result, whatever it is, is never seen by anyone. A daemon thread
    never holds up the process's exit.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()
    handover = _Handover(threading.Lock())

    def settle(result: T | None, error: Exception | None) -> None:
        if outcome.done():
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]

    def body() -> None:
        result: T | None = None
        error: Exception | None = None
        try:
            result = work()
        except BaseException as exc:  # plugin code may raise anything; this thread is ours
            error = escaped(exc)
        with handover.lock:
            handover.finished = True
            abandoned = handover.abandoned
        if abandoned is not None:
            leftovers.remove(abandoned)  # too late: discarded
            return
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    def abandon() -> None:
        with handover.lock:
            if not handover.finished:
                handover.abandoned = leftovers.add(Leftover(THREAD, plugin, code_hash, what))
                return
        # it ended just now: its outcome is on its way to a future nobody reads any more
        outcome.add_done_callback(lambda done: done.cancelled() or done.exception())

    threading.Thread(target=body, name=f"luna-{what}-{plugin}", daemon=True).start()
    try:
        done, _ = await asyncio.wait({outcome}, timeout=timeout)
    except asyncio.CancelledError:
        abandon()
        raise
    if not done:
        abandon()
        raise TimeoutError(f"{what} did not finish within {timeout:g} s")
    return outcome.result()

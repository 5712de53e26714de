"""Calling plugin code under a deadline, and keeping whatever it raises inside.

asyncio lets ``SystemExit`` and ``KeyboardInterrupt`` leave a task and stop the event loop, so
plugin code is always awaited through :func:`contained`, which turns them (and any other
``BaseException`` that is not an ``Exception``) into :class:`PluginEscapeError`. Only the
runtime's own cancellation passes through as ``asyncio.CancelledError``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

#: seconds a cancelled plugin coroutine gets to finish before it is reported as one that
#: ignores cancellation (and abandoned)
CANCEL_GRACE = 1.0


def overdue_seconds(call_started: float | None, timeout: float) -> float | None:
    """Seconds a callback started at ``call_started`` (monotonic; None: none runs) is past its
    ``timeout`` and the grace a cancelled callback gets, else None."""
    if call_started is None:
        return None
    late = time.monotonic() - call_started - timeout
    return late if late > CANCEL_GRACE else None


class PluginEscapeError(Exception):
    """Plugin code raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``...): ``original`` is it. Handled like any plugin error."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class PluginCancelledError(Exception):
    """Plugin code raised ``asyncio.CancelledError`` without being cancelled."""


def escaped(exc: BaseException) -> Exception:
    """``exc`` as an ``Exception`` the runtime's handlers catch (``PluginEscapeError`` for
    anything beyond ``Exception``)."""
    return exc if isinstance(exc, Exception) else PluginEscapeError(exc)


async def contained(awaitable: Awaitable[Any]) -> Any:
    """Await plugin code; what it raises beyond ``Exception`` comes back as
    :class:`PluginEscapeError`. Cancellation passes through unchanged."""
    try:
        return await awaitable
    except (Exception, asyncio.CancelledError, GeneratorExit):  # GeneratorExit: the loop closing us
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt...: never let them reach the loop
        raise PluginEscapeError(exc) from exc


def call_contained(func: Callable[..., Any], *args: Any) -> Any:
    """Call plugin code synchronously; a ``BaseException`` beyond ``Exception`` becomes
    :class:`PluginEscapeError`."""
    try:
        return func(*args)
    except (Exception, asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as exc:
        raise PluginEscapeError(exc) from exc


async def call_with_timeout(
    func: Callable[..., Any],
    *args: Any,
    timeout: float,
    abandon: Callable[[asyncio.Task[Any]], None] | None = None,
) -> Any:
    """Call ``func(*args)`` (sync or async) and return its result within ``timeout`` seconds.

    Raises ``TimeoutError`` when it takes longer; the plugin's coroutine is then cancelled but
    never waited for, so a plugin that swallows cancellation cannot hold the caller; ``abandon``
    receives that cancelled task (to report it if it keeps running). Exceptions of the plugin
    propagate unchanged, except that a ``BaseException`` beyond ``Exception`` arrives as
    :class:`PluginEscapeError`.
    """
    result = call_contained(func, *args)
    if not inspect.isawaitable(result):
        return result
    task = asyncio.ensure_future(contained(result))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        if abandon is not None:
            abandon(task)
        raise
    if not done:
        task.cancel()
        if abandon is not None:
            abandon(task)
        raise TimeoutError(f"did not finish within {timeout:g} s")
    if task.cancelled():
        # The plugin raised CancelledError itself (we did not cancel it): that is its failure,
        # not a cancellation of the caller, so it must not end the caller's task.
        raise PluginCancelledError("the plugin's coroutine raised CancelledError")
    return task.result()

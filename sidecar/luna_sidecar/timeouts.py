"""Calling plugin code under a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def call_with_timeout(func: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """Call ``func(*args)`` (sync or async) and return its result within ``timeout`` seconds.

    Raises ``TimeoutError`` when it takes longer; the plugin's coroutine is then cancelled but
    never waited for, so a plugin that swallows cancellation cannot hold the caller. Exceptions
    of the plugin propagate unchanged.
    """
    result = func(*args)
    if not inspect.isawaitable(result):
        return result
    task = asyncio.ensure_future(result)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError(f"did not finish within {timeout:g} s")
    if task.cancelled():
        # The plugin raised CancelledError itself (we did not cancel it): that is its failure,
        # not a cancellation of the caller, so it must not end the caller's task.
        raise PluginCancelledError("the plugin's coroutine raised CancelledError")
    return task.result()


class PluginCancelledError(Exception):
    """Plugin code raised ``asyncio.CancelledError`` without being cancelled."""

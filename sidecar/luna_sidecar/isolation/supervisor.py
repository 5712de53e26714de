"""Keeping the tasks that follow the desired state running.

The feed's tasks (the directory watcher, or the ConfigMap watcher and the per-pod reporter) are
meant to run forever. If one ends anyway (a bug raised, or plugin code cancelled it: plugins
share the process), reloads would silently stop. :class:`Supervisor` restarts it with backoff
and makes liveness fail when it does not stay up, so the kubelet restarts the container.

No task watches the task: a done-callback restarts it, so there is nothing for plugin code to
cancel besides the task itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Counter

from luna_sidecar.isolation.timeouts import CANCEL_GRACE

log = logging.getLogger(__name__)


class Supervisor:
    """Runs ``run()`` as a task named ``name`` and restarts it whenever it ends.

    Restarts wait ``min_backoff`` seconds, doubling up to ``max_backoff``; a run that lasted
    ``stable_after`` seconds counts as a recovery (the backoff starts over). :meth:`live` fails
    once the task has not stayed up for ``limit`` seconds.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        *,
        limit: float,
        restarts: Counter,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_after: float = 30.0,
    ) -> None:
        self.name = name
        self._run = run
        self.limit = limit
        self._restarts = restarts
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.failures = 0
        self.last_error: str | None = None
        self._backoff = min_backoff
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        self._down_since: float | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the task (on the running loop)."""
        self._timer = None
        if self._stopping:
            return
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        if task.cancelled():
            reason = "it was cancelled by something other than the sidecar (plugin code?)"
        elif task.exception() is not None:
            error = task.exception()
            reason = f"{type(error).__name__}: {error}"
            log.error("%s failed", self.name, exc_info=error)
        else:
            reason = "it returned"
        if now - self._started_at >= self.stable_after:
            self._backoff, self._down_since = self.min_backoff, None  # it had recovered
        if self._down_since is None:
            self._down_since = now
        self.failures += 1
        self.last_error = reason
        self._restarts.inc()
        log.error("%s stopped (%s); restarting it in %.1f s", self.name, reason, self._backoff)
        self._timer = asyncio.get_running_loop().call_later(self._backoff, self.start)
        self._backoff = min(self._backoff * 2, self.max_backoff)

    def live(self) -> tuple[bool, str]:
        """(ok, reason) for /healthz: not ok once the task has been failing for ``limit`` s."""
        now = time.monotonic()
        down = self._down_since
        if down is not None and self._task is not None and not self._task.done():
            if now - self._started_at >= self.stable_after:
                self._backoff, self._down_since = self.min_backoff, None
                return True, "ok"
        if down is not None and now - down > self.limit:
            return (
                False,
                f"{self.name} keeps failing: {self.failures} restart(s), not up for {now - down:.0f} s "
                f"(limit {self.limit:g} s); last: {self.last_error}",
            )
        return True, "ok"

    async def stop(self) -> None:
        """Stop the task and restart no more; waits at most a moment for it to end."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_GRACE)

"""Plugin work the runtime stopped waiting for: threads still running a plugin's import or
constructor after their timeout, and tasks that ignored cancellation (a callback, ``close()``...).

Nothing in-process can stop them, so they are counted and shown instead, until they end on
their own: ``GET /plugins`` lists them under ``stuck`` and the metrics
``luna_plugin_stuck_threads`` and ``luna_plugin_abandoned_tasks`` count them per plugin.
Thread-safe: threads remove their own entries when they finish.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from luna_sidecar.isolation.timeouts import CANCEL_GRACE

log = logging.getLogger(__name__)

THREAD = "thread"
TASK = "task"


@dataclass(frozen=True)
class Leftover:
    """One thread or task of plugin code that outlived its deadline."""

    kind: str
    """``thread`` (an import or constructor past its timeout) or ``task`` (ignored cancellation)."""
    plugin: str
    code_hash: str
    what: str
    """What it was doing: ``import``, ``construct``, ``Name.close()``, ``Name.handleEvent()``..."""
    since: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        """As ``GET /plugins`` shows it."""
        return {
            "kind": self.kind,
            "plugin": self.plugin,
            "codeHash": self.code_hash,
            "what": self.what,
            "since": self.since,
        }


class Leftovers:
    """The threads and tasks of plugin code the runtime abandoned, while they still run."""

    def __init__(self, *, grace: float = CANCEL_GRACE) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._entries: dict[int, Leftover] = {}
        self._ids = itertools.count()

    def add(self, leftover: Leftover) -> int:
        """Count ``leftover`` until :meth:`remove` is called with the returned id."""
        with self._lock:
            key = next(self._ids)
            self._entries[key] = leftover
        log.warning(
            "plugin %s: %s is still running past its deadline (%s); abandoned",
            leftover.plugin,
            leftover.what,
            "a thread nothing can stop" if leftover.kind == THREAD else "it ignores cancellation",
        )
        return key

    def remove(self, key: int) -> None:
        """The abandoned work ended."""
        with self._lock:
            leftover = self._entries.pop(key, None)
        if leftover is not None:
            log.info(
                "plugin %s: abandoned %s finished after %.1f s",
                leftover.plugin,
                leftover.what,
                time.time() - leftover.since,
            )

    def watch_task(self, task: asyncio.Future[Any], *, plugin: str, code_hash: str, what: str) -> None:
        """``task`` was just cancelled: if it still runs ``grace`` seconds later it ignores
        cancellation, and is counted until it ends."""
        if task.done():
            return

        def check() -> None:
            self.add_task(task, plugin=plugin, code_hash=code_hash, what=what)

        asyncio.get_running_loop().call_later(self.grace, check)

    def add_task(self, task: asyncio.Future[Any], *, plugin: str, code_hash: str, what: str) -> None:
        """Count ``task`` (cancelled, but still running) until it ends."""
        if task.done():
            return
        key = self.add(Leftover(TASK, plugin, code_hash, what))
        task.add_done_callback(lambda _: self.remove(key))

    def entries(self) -> list[Leftover]:
        """What is still running, oldest first."""
        with self._lock:
            return list(self._entries.values())

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, plugin) -> how many are still running."""
        counts: dict[tuple[str, str], int] = {}
        for entry in self.entries():
            key = (entry.kind, entry.plugin)
            counts[key] = counts.get(key, 0) + 1
        return counts

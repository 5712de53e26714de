"""Group commit: one round of fsyncs makes every record appended before it durable, whatever the
number of requests and queues that appended them.

A round starts as soon as something is dirty and no round runs; appends that arrive while a
round's fsyncs run (in a thread of its own, so the event loop keeps accepting requests) wait for
the next round. Under load one fsync thus covers many requests; an idle queue pays one fsync
per request. What callers may rely on: the future :meth:`GroupCommitter.commit` returns
resolves once everything the log held when it was called is on disk, or raises the ``OSError``
of the fsync that failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from luna_sidecar.delivery.segments import SegmentLog, SyncJob

log = logging.getLogger(__name__)


class GroupCommitter:
    """Syncs dirty logs in rounds, one thread, on behalf of every queue of the process."""

    def __init__(self) -> None:
        self._dirty: dict[SegmentLog, list[asyncio.Future[None]]] = {}
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="luna-delivery-fsync")
        self.listeners: dict[SegmentLog, Callable[[], None]] = {}
        """called (on the loop) after a round synced the log"""
        self.rounds = 0

    def commit(self, segment_log: SegmentLog) -> asyncio.Future[None]:
        """A future resolved when what ``segment_log`` holds now is durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dirty.setdefault(segment_log, []).append(future)
        self._kick()
        return future

    def touch(self, segment_log: SegmentLog) -> None:
        """Sync ``segment_log`` soon (its cursor moved); nobody waits for it."""
        self._dirty.setdefault(segment_log, [])
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._rounds(), name="luna-delivery-commit")

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            jobs = [segment_log.prepare_sync(closing=self._closing) for segment_log in batch]
            try:
                await loop.run_in_executor(self._executor, _run_all, jobs)
            except BaseException:
                # cancelled (shutdown): the jobs still run in the thread; nobody waits any more
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.cancel()
                raise
            self.rounds += 1
            for job in jobs:
                job.log.finish_sync(job)
                if job.error is not None:
                    log.error("delivery queue %s: sync failed: %s", job.log.directory, job.error)
                for future in batch[job.log]:
                    if future.done():
                        continue
                    if job.error is not None:
                        future.set_exception(job.error)
                    else:
                        future.set_result(None)
                listener = self.listeners.get(job.log)
                if listener is not None:
                    listener()

    async def flush(self, logs: list[SegmentLog] | None = None) -> None:
        """Wait until nothing is dirty (every append durable, every cursor written); with
        ``logs``, sync those a last time, their cursors fsynced."""
        if logs:
            await self._task_done()
            self._closing = True
            for segment_log in logs:
                self.touch(segment_log)
        await self._task_done()

    async def _task_done(self) -> None:
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def close(self) -> None:
        """Stop the thread (after :meth:`flush`)."""
        self._executor.shutdown(wait=True)


def _run_all(jobs: list[SyncJob]) -> None:
    for job in jobs:
        job.run()

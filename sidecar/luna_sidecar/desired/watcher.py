"""Standalone mode's change detection: poll the plugins directory and the active-list file,
debounce bursts of changes, and re-apply the desired state; SIGHUP forces a full re-apply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from luna_sidecar.config import ConfigError
from luna_sidecar.desired.sources import DesiredPlugin, DirectorySource

log = logging.getLogger(__name__)

ApplyFn = Callable[[list[DesiredPlugin], bool], Awaitable[None]]


class DirectoryWatcher:
    """Keeps the runtime converged on a :class:`DirectorySource`.

    A change is applied once the files have been quiet for ``debounce`` seconds. An unusable
    active-list file is reported (once, until it changes) and the plugins already running stay
    as they are. :meth:`run` may be restarted: it picks up what changed while it was down.
    """

    def __init__(
        self, source: DirectorySource, apply: ApplyFn, *, poll_interval: float, debounce: float
    ) -> None:
        self.source = source
        self._apply = apply
        self.poll_interval = poll_interval
        self.debounce = debounce
        self._reload = asyncio.Event()
        self.syncs = 0
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._problem: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with the source now (ignored until it is fixed)."""
        return [self._problem] if self._problem else []

    def request_reload(self) -> None:
        """Re-read everything and retry failed versions now (what SIGHUP does)."""
        self._reload.set()

    async def sync(self, *, retry_failed: bool = False) -> bool:
        """Read the source and apply it; returns False when the source could not be read."""
        self._seen = self.source.fingerprint()  # before reading: a change meanwhile is seen again
        try:
            desired = self.source.read()
        except ConfigError as exc:
            problem = f"active list unusable, keeping the current plugins: {exc}"
            if problem != self._problem:
                log.error("%s", problem)
            self._problem = problem
            return False
        self._problem = None
        await self._apply(desired, retry_failed)
        self.syncs += 1
        return True

    async def run(self) -> None:
        """Watch forever (cancel to stop)."""
        seen = self._seen if self._seen is not None else self.source.fingerprint()
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), timeout=self.poll_interval)
            except TimeoutError:
                pass
            if self._reload.is_set():
                self._reload.clear()
                log.info("reload requested: re-reading all plugins")
                await self.sync(retry_failed=True)
                seen = self._seen if self._seen is not None else seen
                continue
            current = self.source.fingerprint()
            if current == seen:
                continue
            # Debounce: wait until the files stop changing, so an editor's burst is one reload.
            while True:
                await asyncio.sleep(self.debounce)
                settled = self.source.fingerprint()
                if settled == current:
                    break
                current = settled
            await self.sync()
            seen = self._seen if self._seen is not None else current

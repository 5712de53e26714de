"""Standalone mode's change detection: poll the plugins directory and the active-list file,
debounce bursts of changes, and re-apply the desired state; SIGHUP forces a full re-apply."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from luna_sidecar.config import ConfigError
from luna_sidecar.sources import DesiredPlugin, DirectorySource

log = logging.getLogger(__name__)

ApplyFn = Callable[[list[DesiredPlugin], bool], Awaitable[None]]


class DirectoryWatcher:
    """Keeps the runtime converged on a :class:`DirectorySource`.

    A change is applied once the files have been quiet for ``debounce`` seconds. An unusable
    active-list file is reported and the plugins already running stay as they are.
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

    def request_reload(self) -> None:
        """Re-read everything and retry failed versions now (what SIGHUP does)."""
        self._reload.set()

    async def sync(self, *, retry_failed: bool = False) -> bool:
        """Read the source and apply it; returns False when the source could not be read."""
        try:
            desired = self.source.read()
        except ConfigError as exc:
            log.error("active list unusable, keeping the current plugins: %s", exc)
            return False
        await self._apply(desired, retry_failed)
        self.syncs += 1
        return True

    async def run(self) -> None:
        """Watch forever (cancel to stop)."""
        seen = self.source.fingerprint()
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), timeout=self.poll_interval)
            except TimeoutError:
                pass
            if self._reload.is_set():
                self._reload.clear()
                log.info("reload requested: re-reading all plugins")
                seen = self.source.fingerprint()
                await self.sync(retry_failed=True)
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
            seen = current
            await self.sync()

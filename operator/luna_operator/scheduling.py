"""When passes run: at most one per service at a time, triggers merged, failures retried.

A pass is *full* (desired state: ConfigMaps, active list, statuses) or *status* (only
``status.loaded`` and ``status.pods``); a pending full pass includes a pending status pass.
Each trigger says how soon it wants its pass (``delay``): the first trigger of a burst sets the
time and later ones may only bring it forward, so a burst of sidecar reports is one pass.
Triggers that arrive while a pass runs cause exactly one more. A failed pass is retried with
backoff (``backoff`` seconds, doubling up to ``max_backoff``), and nothing triggered meanwhile
runs it sooner. A pass may ask for another one some seconds later although nothing changes (a
refused write that may be allowed later, statuses held back). Passes wait until
:meth:`Coalescer.open` is called (the operator's view is complete).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from luna_operator.errors import PassIncompleteError

log = logging.getLogger("luna.operator")

ServiceKey = tuple[str, str]
PassKind = Literal["full", "status"]
PassWork = Callable[[ServiceKey, PassKind], Awaitable[tuple[PassKind, float] | None]]
"""runs a pass; may return a pass to run later though nothing changes: (kind, in seconds)"""
PassObserver = Callable[[ServiceKey, PassKind, str, float], None]
"""called after every pass with (service, kind, outcome: ok | incomplete | error, seconds)"""


def _merge(current: PassKind | None, new: PassKind) -> PassKind:
    return "full" if "full" in (current, new) else "status"


@dataclass
class _Slot:
    pending: PassKind | None = None
    due: float = 0.0
    not_before: float = 0.0
    backoff: float = 0.5
    running: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Coalescer:
    """Runs ``work(service, kind)`` as described in the module docstring."""

    def __init__(
        self,
        work: PassWork,
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        observer: PassObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._observer = observer
        self._clock = clock
        self._slots: dict[ServiceKey, _Slot] = {}
        self._open = asyncio.Event()

    def open(self) -> None:
        """Let passes run (they wait until then)."""
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def trigger(self, key: ServiceKey, kind: PassKind = "full", *, delay: float = 0.05) -> None:
        """Ask for a ``kind`` pass of ``key`` within ``delay`` seconds."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(backoff=self._backoff)
        due = self._clock() + delay
        slot.due = min(slot.due, due) if slot.pending is not None else due
        slot.pending = _merge(slot.pending, kind)
        if slot.task is None:
            slot.task = asyncio.create_task(self._run(key, slot), name=f"luna-pass-{key[0]}-{key[1]}")
        else:
            slot.wake.set()

    def pending(self) -> dict[str, int]:
        """Passes waiting to run, by kind."""
        counts = {"full": 0, "status": 0}
        for slot in self._slots.values():
            if slot.pending is not None:
                counts[slot.pending] += 1
        return counts

    def running(self) -> int:
        return sum(slot.running for slot in self._slots.values())

    async def _run(self, key: ServiceKey, slot: _Slot) -> None:
        try:
            while slot.pending is not None:
                await self._wait_until_due(slot)
                await self._open.wait()
                kind, slot.pending = slot.pending, None
                slot.running = True
                started = self._clock()
                outcome = "ok"
                try:
                    again = await self._work(key, kind)
                    slot.backoff = self._backoff
                    if again is not None:
                        self._again(slot, *again)
                except Exception as exc:
                    outcome = "incomplete" if isinstance(exc, PassIncompleteError) else "error"
                    if outcome == "error":
                        log.exception("%s pass of %s/%s failed, retrying in %.1f s", kind, *key, slot.backoff)
                    else:
                        log.warning(
                            "%s pass of %s/%s incomplete, retrying in %.1f s: %s",
                            kind,
                            *key,
                            slot.backoff,
                            exc,
                        )
                    slot.not_before = self._clock() + slot.backoff
                    slot.due = slot.not_before if slot.pending is None else max(slot.due, slot.not_before)
                    slot.pending = _merge(slot.pending, kind)
                    slot.backoff = min(slot.backoff * 2, self._max_backoff)
                finally:
                    log.debug("%s pass of %s/%s: %s in %.3f s", kind, *key, outcome, self._clock() - started)
                    slot.running = False
                    if self._observer is not None:
                        self._observer(key, kind, outcome, self._clock() - started)
        finally:
            slot.task = None
            if slot.pending is None:
                self._slots.pop(key, None)

    def _again(self, slot: _Slot, kind: PassKind, delay: float) -> None:
        """A ``kind`` pass of the slot's service ``delay`` seconds from now (sooner if triggered)."""
        due = self._clock() + delay
        slot.due = min(slot.due, due) if slot.pending is not None else due
        slot.pending = _merge(slot.pending, kind)

    async def _wait_until_due(self, slot: _Slot) -> None:
        while True:
            remaining = max(slot.due, slot.not_before) - self._clock()
            if remaining <= 0:
                return
            slot.wake.clear()
            try:
                await asyncio.wait_for(slot.wake.wait(), remaining)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        """Cancel every scheduled or running pass (shutdown: the API session is about to close)."""
        tasks = [slot.task for slot in self._slots.values() if slot.task is not None]
        for slot in self._slots.values():
            slot.pending = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._slots.clear()

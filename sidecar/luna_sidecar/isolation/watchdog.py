"""Who blocks the event loop: a watchdog thread charges blocked time to the plugin holding it.

Plugins share one event loop; a plugin that calls ``time.sleep`` or computes for a long time in
a callback or route handler holds everybody up, and timeouts cannot fire meanwhile. The loop
stamps a heartbeat several times per ``threshold``; a thread checks it, and when the loop has
not turned for ``threshold`` seconds it samples the loop thread's stack
(``sys._current_frames``) and charges the time to the innermost plugin module on it (time with
no plugin on the stack is counted as the loop's only). A plugin over its budget of blocked
seconds per minute can be quarantined by the runtime (``over_budget``).

A stall need not be on the loop thread: a plugin thread running C code that holds the GIL (a
backtracking regular expression, ``sum(range(10**9))``) stops the loop, and every other thread,
while the loop thread's stack shows it idle. So the watchdog also keeps each other thread's CPU
time (from ``/proc/self/task``), and when the loop stalled with no plugin on its stack, it
charges the thread that used the CPU meanwhile, by the plugin module on that thread's stack.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from luna_sidecar.observability import RuntimeMetrics

log = logging.getLogger(__name__)

#: the window of the per-plugin blocking budget
BUDGET_WINDOW = 60.0

#: at most one log line about stalls per this many seconds (the metrics count every one)
LOG_EVERY = 10.0


def plugin_on_stack(frame: FrameType | None, plugins: frozenset[str]) -> str | None:
    """The plugin module of the innermost frame that belongs to one (a helper module the
    plugin calls is charged to the plugin that called it)."""
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if name in plugins:
            return str(name)
        frame = frame.f_back
    return None


def thread_cpu_seconds(native_id: int) -> float | None:
    """CPU time of the thread ``native_id`` of this process, or None when it is gone."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as file:
            return int(file.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class ThreadClock:
    """CPU seconds each thread (but those excluded) used between two :meth:`sample` calls."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def sample(self, exclude: set[int]) -> dict[int, float]:
        """Per thread ident, CPU seconds used since the previous sample (threads new since then
        count from their start)."""
        used: dict[int, float] = {}
        seen: dict[int, float] = {}
        for thread in threading.enumerate():
            ident, native = thread.ident, thread.native_id
            if ident is None or native is None or ident in exclude:
                continue
            cpu = thread_cpu_seconds(native)
            if cpu is None:
                continue
            seen[ident] = cpu
            used[ident] = cpu - self._last.get(ident, 0.0)
        self._last = seen
        return used


class BlockLedger:
    """Blocked seconds per plugin: in all and over the last :data:`BUDGET_WINDOW` seconds.

    Only plugins that are :meth:`track`-ed are charged; :meth:`forget` drops a plugin and its
    metric series. Thread-safe: the watchdog charges, the loop reads.
    """

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._plugins: frozenset[str] = frozenset()
        self._totals: dict[str, float] = {}
        self._recent: dict[str, collections.deque[tuple[float, float]]] = {}
        self._flagged: set[str] = set()

    @property
    def plugins(self) -> frozenset[str]:
        """The plugin modules that can be charged (read without the lock: replaced whole)."""
        return self._plugins

    def track(self, plugin: str) -> None:
        """``plugin`` runs code on the loop from now on."""
        with self._lock:
            self._plugins = self._plugins | {plugin}

    def forget(self, plugin: str) -> None:
        """``plugin`` is unloaded: stop charging it and drop what it was charged."""
        with self._lock:
            self._plugins = self._plugins - {plugin}
            self._totals.pop(plugin, None)
            self._recent.pop(plugin, None)
            self._flagged.discard(plugin)

    def clear_recent(self, plugin: str) -> None:
        """Start ``plugin``'s budget window afresh (a new version, or after a quarantine): it
        may be reported over budget again."""
        with self._lock:
            self._recent.pop(plugin, None)
            self._flagged.discard(plugin)

    def flag(self, plugin: str) -> bool:
        """Mark ``plugin`` as reported over budget; False when it already was."""
        with self._lock:
            if plugin in self._flagged:
                return False
            self._flagged.add(plugin)
            return True

    def charge(self, plugin: str, seconds: float, now: float) -> float | None:
        """Charge ``seconds`` to ``plugin``; returns its blocked seconds in the window, or
        None when it is not tracked (not charged)."""
        with self._lock:
            if plugin not in self._plugins:
                return None
            self._totals[plugin] = self._totals.get(plugin, 0.0) + seconds
            # the series is created under the lock: forget() cannot remove it in between
            self._metrics.plugin_loop_blocked.labels(plugin).inc(seconds)
            recent = self._recent.setdefault(plugin, collections.deque())
            recent.append((now, seconds))
            while recent and recent[0][0] < now - BUDGET_WINDOW:
                recent.popleft()
            return sum(charged for _, charged in recent)

    def total(self, plugin: str) -> float:
        """Blocked seconds charged to ``plugin`` since it was tracked."""
        with self._lock:
            return self._totals.get(plugin, 0.0)

    def recent(self, plugin: str, now: float) -> float:
        """Blocked seconds charged to ``plugin`` in the last window."""
        with self._lock:
            return sum(seconds for at, seconds in self._recent.get(plugin, ()) if at >= now - BUDGET_WINDOW)


class LoopWatchdog:
    """A daemon thread watching one event loop. :meth:`start` is called on the loop's thread.

    ``over_budget(plugin, seconds)`` is called on the loop (thread-safe hand-over) when a plugin
    has blocked it for more than ``budget`` seconds within a minute; ``budget`` 0 never calls it.
    """

    def __init__(
        self,
        *,
        threshold: float,
        ledger: BlockLedger,
        metrics: RuntimeMetrics,
        budget: float = 0.0,
        over_budget: Callable[[str, float], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.ledger = ledger
        self.budget = budget
        self.over_budget = over_budget
        self._metrics = metrics
        self._tick = max(0.005, threshold / 4)
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the heartbeat on the running loop and the watching thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._heartbeat()
        self._thread = threading.Thread(target=self._watch, name="luna-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        assert self._loop is not None
        self._timer = self._loop.call_later(self._tick, self._heartbeat)

    def _watch(self) -> None:
        charged_until = 0.0  # end of the stretch of the current stall already charged
        stalled_plugins: dict[str | None, float] = {}
        unlogged: dict[str | None, float] = {}
        stalls, logged_at = 0, -LOG_EVERY
        clock = ThreadClock()
        exclude = {self._loop_thread, threading.get_ident()}
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            beat = self._beat
            used = clock.sample(exclude) if threading.active_count() > 2 else {}
            if now - beat < self.threshold:
                if stalled_plugins:
                    stalls += 1
                    for plugin, seconds in stalled_plugins.items():
                        unlogged[plugin] = unlogged.get(plugin, 0.0) + seconds
                    stalled_plugins = {}
                    if now - logged_at >= LOG_EVERY:
                        self._log_stalls(stalls, unlogged)
                        unlogged, stalls, logged_at = {}, 0, now
                continue
            start = max(beat, charged_until)
            seconds = now - start
            charged_until = now
            frames = sys._current_frames()
            plugin = plugin_on_stack(frames.get(self._loop_thread), self.ledger.plugins)
            if plugin is None and used:
                plugin = self._gil_holder(frames, used, seconds)
            del frames  # a frame kept alive keeps the plugin's locals alive
            self._metrics.loop_blocked.inc(seconds)
            stalled_plugins[plugin] = stalled_plugins.get(plugin, 0.0) + seconds
            if plugin is None:
                continue
            recent = self.ledger.charge(plugin, seconds, now)
            if recent is not None and self.budget > 0 and recent > self.budget:
                self._report_over_budget(plugin, recent)

    def _gil_holder(self, frames: dict[int, FrameType], used: dict[int, float], seconds: float) -> str | None:
        """The plugin of the thread that used the CPU while the loop stalled (at least half of
        the stall's time), if its stack shows one."""
        ident, cpu = max(used.items(), key=lambda item: item[1])
        if cpu < seconds / 2:
            return None
        return plugin_on_stack(frames.get(ident), self.ledger.plugins)

    def _report_over_budget(self, plugin: str, recent: float) -> None:
        if self.over_budget is None or self._loop is None or not self.ledger.flag(plugin):
            return
        try:
            self._loop.call_soon_threadsafe(self.over_budget, plugin, recent)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    @staticmethod
    def _log_stalls(stalls: int, charged: dict[str | None, float]) -> None:
        total = sum(charged.values())
        holders = ", ".join(
            f"{plugin or 'no plugin'} {seconds:.2f} s"
            for plugin, seconds in sorted(charged.items(), key=lambda item: -item[1])
        )
        times = "" if stalls == 1 else f" in {stalls} stalls"
        # blocked by the runtime itself (a big intake body, a loaded machine): worth less noise
        level = logging.WARNING if any(charged) else logging.INFO
        log.log(level, "the event loop was blocked for %.2f s%s (%s)", total, times, holders)

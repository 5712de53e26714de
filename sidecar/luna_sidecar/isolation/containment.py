"""What plugin code could do to the whole sidecar process, contained: ``fork()``, the process's
signal handlers, and stopping the event loop.

- **fork().** A child forked from the sidecar shares its listening sockets and its event loop's
  descriptors; a child that goes back to the inherited loop takes requests and signals from the
  parent, which stops answering. A child forked from the sidecar's process therefore exits at
  once (exit code :data:`FORKED_CHILD_EXIT`, one line on stderr), and the parent counts the fork
  against the plugin that made it (``luna_plugin_contained_total{what="fork"}``). ``subprocess``
  is not affected (its child runs a new program); ``multiprocessing`` defaults to ``spawn``.
- **Signals.** SIGTERM, SIGINT and SIGHUP belong to the runtime (shutdown, reload). A plugin that
  sets a handler for one (``signal.signal``, ``loop.add_signal_handler``), blocks one or replaces
  the wakeup descriptor is refused (the call does nothing, the plugin is named in the log and the
  metric); a handler replaced by other means is found within a second and restored.
- **loop.stop().** Called from plugin code it does nothing (reported the same way).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from luna_sidecar.isolation.watchdog import plugin_on_stack
from luna_sidecar.observability import RuntimeMetrics

__all__ = ["FORKED_CHILD_EXIT", "OWNED_SIGNALS", "Containment"]

log = logging.getLogger(__name__)

#: exit code of a child forked from the sidecar's process (EX_SOFTWARE)
FORKED_CHILD_EXIT = 70
#: the signals the runtime owns
OWNED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: how often the signal handlers are checked (seconds)
CHECK_EVERY = 1.0

_armed: Containment | None = None
_fork_hooks_registered = False


#: functions that start a program: a fork under them is followed by exec in the child
#: (``subprocess`` with a ``preexec_fn``; asyncio's and uvloop's subprocess transports)
_SPAWNERS = frozenset(
    {
        "_execute_child",
        "_make_subprocess_transport",
        "subprocess_exec",
        "subprocess_shell",
        "create_subprocess_exec",
        "create_subprocess_shell",
    }
)


def _in_subprocess_spawn(frame: FrameType | None) -> bool:
    """Whether ``frame``'s stack is starting a program (the child execs at once)."""
    while frame is not None:
        if frame.f_code.co_name in _SPAWNERS:
            return True
        frame = frame.f_back
    return False


def _after_fork_in_child() -> None:
    if _armed is None or _in_subprocess_spawn(sys._getframe(1)):
        return
    try:
        os.write(
            2,
            b"luna-plugins sidecar: a plugin called fork(); the forked child exits at once "
            b"(use subprocess, or multiprocessing with the spawn start method)\n",
        )
    finally:
        os._exit(FORKED_CHILD_EXIT)


def _after_fork_in_parent() -> None:
    armed = _armed
    if armed is None or _in_subprocess_spawn(sys._getframe(1)):
        return
    armed.report(armed.caller(sys._getframe(1)), "fork", "called fork(); the child was ended at once")


class Containment:
    """Guards of one sidecar process; :meth:`arm` installs them on the running loop."""

    def __init__(self, metrics: RuntimeMetrics, plugins: Callable[[], frozenset[str]]) -> None:
        self._metrics = metrics
        self._plugins = plugins
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[int, Callable[[], None]] = {}
        self._expected: dict[int, Any] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._originals: dict[str, Any] = {}

    def caller(self, frame: FrameType | None) -> str:
        """The plugin module on ``frame``'s stack, or ``"unknown"``."""
        return plugin_on_stack(frame, self._plugins()) or "unknown"

    def report(self, plugin: str, what: str, message: str) -> None:
        """Count and log one contained action of ``plugin``."""
        self._metrics.contained.labels(plugin, what).inc()
        log.warning("plugin %s %s", plugin, message)

    def arm(self, handlers: dict[int, Callable[[], None]]) -> None:
        """Install the runtime's signal ``handlers`` and every guard (call on the running loop)."""
        global _armed, _fork_hooks_registered
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._handlers = dict(handlers)
        for signum, callback in self._handlers.items():
            loop.add_signal_handler(signum, callback)
            self._expected[signum] = signal.getsignal(signum)
        self._originals = {
            "add_signal_handler": loop.add_signal_handler,
            "remove_signal_handler": loop.remove_signal_handler,
            "stop": loop.stop,
            "signal": signal.signal,
            "set_wakeup_fd": signal.set_wakeup_fd,
            "pthread_sigmask": signal.pthread_sigmask,
        }
        # on the instance and on the module: whoever looks them up from now on gets the guards
        guards = {
            "add_signal_handler": self._guard_add_signal_handler,
            "remove_signal_handler": self._guard_remove_signal_handler,
            "stop": self._guard_stop,
        }
        vars(loop).update(guards)
        vars(signal).update(
            signal=self._guard_signal,
            set_wakeup_fd=self._guard_set_wakeup_fd,
            pthread_sigmask=self._guard_pthread_sigmask,
        )
        if not _fork_hooks_registered:  # hooks cannot be removed: once per process, armed or not
            os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
            _fork_hooks_registered = True
        _armed = self
        if multiprocessing.get_start_method(allow_none=True) in (None, "fork"):
            multiprocessing.set_start_method("spawn", force=True)
        self._timer = loop.call_later(CHECK_EVERY, self._check)

    def disarm(self) -> None:
        """Remove the guards and the runtime's signal handlers (at shutdown)."""
        global _armed
        _armed = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        if loop is None or not self._originals:
            return
        for name in ("add_signal_handler", "remove_signal_handler", "stop"):
            vars(loop).pop(name, None)
        vars(signal).update(
            {name: self._originals[name] for name in ("signal", "set_wakeup_fd", "pthread_sigmask")}
        )
        for signum in self._handlers:
            loop.remove_signal_handler(signum)
        self._originals = {}

    # --- guards -----------------------------------------------------------------------------

    def _from_plugin(self) -> str | None:
        return plugin_on_stack(sys._getframe(2), self._plugins())

    def _guard_add_signal_handler(self, signum: int, callback: Callable[..., object], *args: Any) -> None:
        plugin = self._from_plugin()
        if plugin is not None and signum in self._handlers:
            self.report(plugin, "signal_handler", f"tried to handle {signal.Signals(signum).name}; refused")
            return
        self._originals["add_signal_handler"](signum, callback, *args)

    def _guard_remove_signal_handler(self, signum: int) -> bool:
        plugin = self._from_plugin()
        if plugin is not None and signum in self._handlers:
            self.report(
                plugin,
                "signal_handler",
                f"tried to remove the {signal.Signals(signum).name} handler; refused",
            )
            return False
        return bool(self._originals["remove_signal_handler"](signum))

    def _guard_stop(self) -> None:
        plugin = self._from_plugin()
        if plugin is not None:
            self.report(plugin, "loop_stop", "called loop.stop(); ignored (the sidecar keeps running)")
            return
        self._originals["stop"]()

    def _guard_signal(self, signum: Any, handler: Any) -> Any:
        plugin = self._from_plugin()
        if plugin is not None and signum in self._handlers:
            self.report(
                plugin, "signal_handler", f"tried to set a {signal.Signals(signum).name} handler; refused"
            )
            return signal.getsignal(signum)
        return self._originals["signal"](signum, handler)

    def _guard_set_wakeup_fd(self, fd: int, /, **kwargs: Any) -> int:
        plugin = self._from_plugin()
        if plugin is not None:
            self.report(plugin, "signal_handler", "tried to replace the signal wakeup descriptor; refused")
            return -1
        return int(self._originals["set_wakeup_fd"](fd, **kwargs))

    def _guard_pthread_sigmask(self, how: int, mask: Any) -> set[signal.Signals]:
        plugin = self._from_plugin()
        owned = set(self._handlers)
        if (
            plugin is not None
            and how in (signal.SIG_BLOCK, signal.SIG_SETMASK)
            and owned & {int(s) for s in mask}
        ):
            self.report(plugin, "signal_handler", "tried to block SIGTERM, SIGINT or SIGHUP; refused")
            mask = {s for s in mask if int(s) not in owned}
        found: set[signal.Signals] = self._originals["pthread_sigmask"](how, mask)
        return found

    def _check(self) -> None:
        """Restore a runtime signal handler that was replaced past the guards."""
        loop = self._loop
        if loop is None or not self._originals:
            return
        for signum, callback in self._handlers.items():
            if signal.getsignal(signum) is not self._expected[signum]:
                self.report(
                    "unknown",
                    "signal_handler",
                    f"replaced the {signal.Signals(signum).name} handler; restored",
                )
                self._originals["add_signal_handler"](signum, callback)
                self._expected[signum] = signal.getsignal(signum)
        self._timer = loop.call_later(CHECK_EVERY, self._check)

"""Keeping plugin code from hurting the sidecar: deadlines, abandoned work, threads, the loop
watchdog, process-wide containment, crash quarantine and supervised tasks.

``timeouts`` calls plugin code under a deadline and keeps what it raises inside;
``leftovers`` counts the work that outlived it; ``plugin_threads`` runs what cannot be awaited;
``watchdog`` charges a blocked event loop to the plugin holding it; ``containment`` guards
``fork()``, signals and the loop; ``crash_guard`` quarantines a version that crashed the process
while loading; ``supervisor`` keeps the feed's tasks running.
"""

from luna_sidecar.isolation.containment import Containment
from luna_sidecar.isolation.crash_guard import CrashGuard
from luna_sidecar.isolation.leftovers import Leftovers
from luna_sidecar.isolation.plugin_threads import run_in_thread
from luna_sidecar.isolation.supervisor import Supervisor
from luna_sidecar.isolation.timeouts import (
    CANCEL_GRACE,
    PluginCancelledError,
    PluginEscapeError,
    call_with_timeout,
    escaped,
    overdue_seconds,
)
from luna_sidecar.isolation.watchdog import BlockLedger, LoopWatchdog

__all__ = [
    "CANCEL_GRACE",
    "BlockLedger",
    "Containment",
    "CrashGuard",
    "Leftovers",
    "LoopWatchdog",
    "PluginCancelledError",
    "PluginEscapeError",
    "Supervisor",
    "call_with_timeout",
    "escaped",
    "overdue_seconds",
    "run_in_thread",
]

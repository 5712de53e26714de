"""Isolated plugins: each in a process of its own, supervised by the sidecar.

``protocol`` is the wire; ``confine`` what the child applies to itself before plugin code runs;
``child_process`` one process as the sidecar sees it (start, calls, output, memory, stalls, end);
``supervised`` one isolated plugin version (restarts with backoff, quarantine, stand-ins whose
calls cross to the process); ``metrics`` their series. The child's own program is
``luna_sidecar.child``.
"""

from luna_sidecar.process.child_process import ChildGoneError, ChildLoadError, ExitInfo
from luna_sidecar.process.limits import ProcessLimits
from luna_sidecar.process.metrics import ProcessMetrics
from luna_sidecar.process.supervised import (
    IsolatedCallError,
    IsolatedPlugin,
    IsolationSettings,
    ProcessBackgroundPlugin,
    ProcessEventPlugin,
    ProcessStandIn,
)

__all__ = [
    "ChildGoneError",
    "ChildLoadError",
    "ExitInfo",
    "IsolatedCallError",
    "IsolatedPlugin",
    "IsolationSettings",
    "ProcessBackgroundPlugin",
    "ProcessEventPlugin",
    "ProcessLimits",
    "ProcessMetrics",
    "ProcessStandIn",
]

"""The sidecar assembled and run: its listeners, runtime, desired-state feed and signals.

``server`` builds a :class:`Sidecar` from a :class:`~luna_sidecar.config.SidecarConfig` and runs it
until SIGTERM; ``feeds`` connects where the desired plugins come from (a directory, or the
cluster through :mod:`luna_sidecar.kube`) to the engine's ``Runtime.apply``. Only the command
line (:mod:`luna_sidecar.cli`) and the test harness (:mod:`luna_sidecar.testing`) sit above it.
"""

from luna_sidecar.assembly.feeds import StartupError
from luna_sidecar.assembly.server import Sidecar, build_sidecar, serve

__all__ = ["Sidecar", "StartupError", "build_sidecar", "serve"]

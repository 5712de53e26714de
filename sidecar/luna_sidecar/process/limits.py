"""What an isolated plugin's process may use, and how its crashes are answered."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProcessLimits"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessLimits:
    """Limits of each isolated plugin's process (the sidecar's ``--isolated-*`` settings)."""

    memory_bytes: int = 512 * MIB
    """resident memory the process may reach; past it the process is ended (only it). Its
    address space is capped a little above (``memory_bytes`` + :data:`ADDRESS_HEADROOM` over
    what the process had mapped before the plugin's code ran), so a huge allocation fails at once"""
    stall_seconds: float = 10.0
    """CPU time one callback or route handler may hold the process's event loop (or its GIL)
    without the loop answering: past it the process is ended and restarted"""
    open_files: int = 256
    """open file descriptors (``RLIMIT_NOFILE``)"""
    processes: int = 64
    """processes and threads the plugin may start (``RLIMIT_NPROC``), when the sidecar runs as
    root and each plugin as a user of its own; not applied otherwise (see ``confine``)"""
    restart_delay: float = 0.5
    """delay before the first restart after a crash; doubled for each crash in the window"""
    restart_delay_max: float = 30.0
    crash_limit: int = 5
    """crashes within ``crash_window`` that quarantine the plugin"""
    crash_window: float = 300.0


#: address space allowed beyond the memory limit: thread stacks and malloc arenas are mapped
#: long before they are used (64 MiB per arena), so the cap only stops allocations far past it
ADDRESS_HEADROOM = 1024 * MIB

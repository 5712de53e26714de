"""The logger type handed to plugin callbacks.

Plugin files may write ``from log import Logger``, as in the original service. The runtime makes
that import resolve to this module only when no real ``log`` module is installed (see
``luna_plugins.compat``), so a user's own ``log`` package is never shadowed.
"""

from logging import Logger, LoggerAdapter

__all__ = ["Logger", "LoggerAdapter"]

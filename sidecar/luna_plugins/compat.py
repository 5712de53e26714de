"""Import compatibility for plugin files written for the original service.

``install_log_alias()`` adds a meta-path finder *after* the standard ones, so ``import log``
finds a real installed ``log`` module first and falls back to :mod:`luna_plugins.log` only when
there is none. Calling it more than once is harmless.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

_ALIASES = {"log": "luna_plugins.log"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self._target)

    def exec_module(self, module: types.ModuleType) -> None:
        """The target module is already executed by its own import."""


class _FallbackAliasFinder(importlib.abc.MetaPathFinder):
    """Resolves the aliased top-level names, consulted only after every regular finder."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        alias_target = _ALIASES.get(fullname)
        if alias_target is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(alias_target))


def install_log_alias() -> None:
    """Let plugins ``import log`` without shadowing a real ``log`` module. Idempotent."""
    if not any(isinstance(finder, _FallbackAliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_FallbackAliasFinder())

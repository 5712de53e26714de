"""Which module names a plugin may have: the contract's rule (:mod:`luna_contract.plugin_modules`),
named here for plugin authors' tools."""

from __future__ import annotations

from luna_contract.plugin_modules import RESERVED_MODULES, check_module_name

__all__ = ["RESERVED_MODULES", "check_module_name"]

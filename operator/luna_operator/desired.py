"""Deciding, for all plugins of one service at once, each plugin's phase and the active list.

Pure: given the plugins, their resolved code and the ConfigMaps that exist now, it returns what
should exist. Rules:

- valid and enabled -> Ready, in the active list with its new code;
- valid and disabled -> Disabled, not in the list;
- invalid, or its ``codeFrom`` not readable -> Invalid / Pending, and the *last good* version
  (the code already in its ConfigMap) stays in the active list, so sidecars keep serving it;
- two enabled plugins with the same module -> the older one wins, the other is Invalid;
- a plugin being deleted leaves the list.
"""

from __future__ import annotations

from dataclasses import dataclass

from luna_operator.render import ActiveEntry, plugin_configmap_name
from luna_operator.store import PluginRecord
from luna_operator.validation import Problem, code_hash, module_name, validate_code, validate_module


@dataclass(frozen=True)
class ResolvedCode:
    """A plugin's code, or why it could not be read (``codeFrom`` missing...)."""

    code: str | None
    error: str | None = None


@dataclass(frozen=True)
class PluginOutcome:
    """What the reconcile decided for one plugin."""

    plugin: PluginRecord
    module: str
    phase: str
    message: str
    code: str | None
    """code to write into the plugin's ConfigMap (valid code only)"""
    code_hash: str | None
    """the hash of the code in service: the new one when valid, else the last good one"""
    active: ActiveEntry | None


def decide(
    plugins: list[PluginRecord],
    codes: dict[str, ResolvedCode],
    existing_hashes: dict[str, str],
) -> list[PluginOutcome]:
    """``plugins`` oldest first; ``codes`` and ``existing_hashes`` (the hash annotation of each
    plugin's current ConfigMap) by plugin name. Returns an outcome per plugin not being deleted."""
    outcomes: list[PluginOutcome] = []
    taken: dict[str, str] = {}
    for plugin in plugins:
        if plugin.deleting:
            continue
        spec = plugin.spec
        module = module_name(plugin.name, spec.get("module"))
        enabled = bool(spec.get("enabled", True))
        resolved = codes.get(plugin.name, ResolvedCode(None, "code not resolved"))
        last_good = existing_hashes.get(plugin.name)
        problems: list[Problem] = validate_module(module)
        if resolved.code is None:
            phase, message, code, new_hash = "Pending", resolved.error or "waiting for the code", None, None
        else:
            problems += validate_code(resolved.code, pinned_sha256=spec.get("sha256"))
            code, new_hash = resolved.code, code_hash(resolved.code)
            phase, message = ("Ready", "") if enabled else ("Disabled", "spec.enabled is false")
        if problems:
            phase, message, code, new_hash = "Invalid", "; ".join(str(p) for p in problems), None, None
        if enabled and phase != "Disabled":
            owner = taken.get(module)
            if owner is not None:
                outcomes.append(
                    PluginOutcome(
                        plugin,
                        module,
                        "Invalid",
                        f"module {module!r} is already provided by LunaPlugin {owner!r} of service "
                        f"{plugin.service!r}; set spec.module to another name",
                        None,
                        None,
                        None,
                    )
                )
                continue
            taken[module] = plugin.name
        serving_hash = new_hash if new_hash is not None else last_good
        active = None
        if enabled and phase != "Disabled" and serving_hash is not None:
            if phase != "Ready" and message:
                message += f" (version {serving_hash[:12]} keeps serving)" if last_good else ""
            active = ActiveEntry(
                module=module,
                plugin=plugin.name,
                code_hash=serving_hash,
                config_map=plugin_configmap_name(plugin.name),
                order=int(spec.get("order") or 0),
                settings=dict(spec.get("settings") or {}),
            )
        outcomes.append(PluginOutcome(plugin, module, phase, message, code, serving_hash, active))
    return outcomes

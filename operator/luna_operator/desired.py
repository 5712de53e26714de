"""Deciding, for all plugins of one service at once, each plugin's phase, what its ConfigMap
should hold, and the active list.

Pure: given the plugins, their checked code and what each plugin's ConfigMap holds now, it
returns what should exist. Rules:

- a *version* is (module, code): what a plugin's ConfigMap holds is the version in service;
- valid and enabled -> Ready: the new version is written and named by the active list;
- valid and disabled -> Disabled: the new version is written, the list leaves it out;
- invalid, refused, or its code not readable yet -> Invalid / Pending, and the *last good*
  version (what its ConfigMap holds now, under the module it had) stays in the list, so sidecars
  keep serving it; a change that fails does not take effect, a module rename included;
- the ConfigMap always carries the plugin's current service: a plugin moved to another service
  moves with its version in service, even when its code did not change;
- a module is claimed by the oldest enabled plugin asking for it; a newer one is Invalid;
- ``spec.settings`` and ``spec.requirements`` are part of the change: settings that are not an
  object or too large, or requirements that are not PEP 508 strings from the index, are Invalid,
  and the last good version keeps the settings and requirements the active list has for it; plugins
  whose entries would make the active list too large for a ConfigMap are Invalid, newest first;
- one plugin never stops the others: anything unexpected while deciding one plugin makes that
  plugin Invalid with the reason, and the others are decided as usual;
- a plugin being deleted leaves the list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from luna_contract.active_list import ActiveEntry, encode_entry
from luna_contract.code import code_hash
from luna_contract.names import plugin_configmap_name
from luna_contract.plugin_modules import module_name
from luna_contract.secret_settings import version_of
from luna_operator.records import PluginRecord
from luna_operator.render import ExistingConfigMap, StoredVersion
from luna_operator.secret_settings import Resolved
from luna_operator.validation import Problem, check_spec, module_taken

#: the longest message a status carries (the whole resource must stay under about 1 MiB)
MAX_MESSAGE_CHARS = 2000
#: the most an active list's data may take: a ConfigMap holds about 1 MiB, keys and metadata included
MAX_ACTIVE_LIST_BYTES = 900 * 1024


@dataclass(frozen=True)
class CheckedCode:
    """A plugin's code and the verdict on it; ``code`` None (with ``waiting``) when it could not
    be read or checked yet (``codeFrom`` missing, the check could not run); ``transient`` when
    that may pass without any change (the API or the check failed), so the pass is retried."""

    code: str | None
    problems: tuple[Problem, ...] = ()
    waiting: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class PluginOutcome:
    """What the pass decided for one plugin."""

    plugin: PluginRecord
    module: str
    """the module the spec asks for"""
    phase: str
    message: str
    stored: StoredVersion | None
    """what the plugin's ConfigMap must hold after the pass; None: leave it as it is"""
    active: ActiveEntry | None
    """the plugin's entry in the active list (its version in service), if any"""
    transient: bool = False
    """the failure may go away by itself: the pass is to be retried"""
    rollout: Mapping[str, Any] | None = None
    """``status.rollout`` while the plugin has ``spec.rollout`` (None: it has none)"""

    @property
    def code_hash(self) -> str | None:
        """The hash of the version in service (or, when disabled, ready to serve)."""
        if self.active is not None:
            return self.active.code_hash
        return self.stored.code_hash if self.stored is not None else None

    @property
    def serving_module(self) -> str:
        """The module sidecars run the plugin as: its version in service's, else the spec's."""
        return self.active.module if self.active is not None else self.module


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters (a status must not carry a plugin's bulk)."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def last_good(plugin: PluginRecord, existing: ExistingConfigMap | None) -> StoredVersion | None:
    """The plugin's version in service: what its own ConfigMap holds, if it is well formed."""
    if existing is None or not existing.managed or existing.owner_uid != plugin.uid:
        return None
    return existing.version


def decide(
    plugins: list[PluginRecord],
    codes: dict[str, CheckedCode],
    existing: dict[str, ExistingConfigMap],
    listed: Mapping[str, ActiveEntry] | None = None,
    secrets: Mapping[str, Resolved] | None = None,
    *,
    prometheus: bool = False,
) -> list[PluginOutcome]:
    """``plugins`` oldest first; ``codes``, ``existing``, ``listed`` (each plugin's entry in the
    current active list, whose settings, requirements and secret settings a refused change keeps) and
    ``secrets`` (the resolution of each ``spec.settingsFrom``; absent: the plugin has none) by
    plugin name; ``prometheus``: whether rollout queries may be asked (see
    :func:`~luna_operator.validation.check_spec`). Returns an outcome per plugin not being deleted,
    in the same order."""
    listed = listed or {}
    secrets = secrets or {}
    live = [plugin for plugin in plugins if not plugin.deleting]
    claims: dict[str, str] = {}  # module -> the oldest enabled plugin asking for it
    for plugin in live:
        if _enabled(plugin):
            claims.setdefault(module_name(plugin.name, plugin.fields.module), plugin.name)
    serving: set[str] = set()
    outcomes = []
    for plugin in live:
        try:
            outcome = _decide_one(
                plugin,
                codes.get(plugin.name),
                existing.get(plugin.name),
                listed.get(plugin.name),
                claims,
                serving,
                secrets.get(plugin.name),
                prometheus=prometheus,
            )
        except Exception as exc:  # a bug or a shape we did not foresee: this plugin only
            outcome = PluginOutcome(
                plugin,
                plugin.name,
                "Invalid",
                bounded(f"the operator could not decide this plugin: {type(exc).__name__}: {exc}"),
                None,
                None,
            )
        if outcome.active is not None:
            serving.add(outcome.active.module)
        outcomes.append(outcome)
    return _fit_active_list(outcomes)


def entry_bytes(entry: ActiveEntry) -> int:
    """About what ``entry`` adds to its active list's data (both keys)."""
    details = {entry.module: encode_entry(entry)}
    return len(json.dumps(details).encode()) + len(json.dumps(entry.module).encode()) + 2


def _fit_active_list(outcomes: list[PluginOutcome]) -> list[PluginOutcome]:
    """Keep the active list within :data:`MAX_ACTIVE_LIST_BYTES`: the older plugins first, a
    plugin whose entry does not fit any more is Invalid and left out."""
    total = 0
    fitted = []
    for outcome in outcomes:  # oldest first
        if outcome.active is not None:
            size = entry_bytes(outcome.active)
            if total + size > MAX_ACTIVE_LIST_BYTES:
                reason = (
                    f"the active list of service {outcome.plugin.service!r} would exceed "
                    f"{MAX_ACTIVE_LIST_BYTES} bytes with this plugin's entry ({size} bytes, most of it "
                    "spec.settings): make the settings of this service's plugins smaller"
                )
                outcome = replace(outcome, phase="Invalid", message=bounded(reason), active=None)
            else:
                total += size
        fitted.append(outcome)
    return fitted


def _enabled(plugin: PluginRecord) -> bool:
    return plugin.fields.enabled


def _decide_one(
    plugin: PluginRecord,
    checked: CheckedCode | None,
    existing: ExistingConfigMap | None,
    listed: ActiveEntry | None,
    claims: dict[str, str],
    serving: set[str],
    secret: Resolved | None = None,
    *,
    prometheus: bool = False,
) -> PluginOutcome:
    spec = plugin.spec
    module = module_name(plugin.name, plugin.fields.module)
    enabled = _enabled(plugin)
    previous = last_good(plugin, existing)
    checks = check_spec(plugin.name, module, spec, prometheus=prometheus)
    settings_problems = list(checks.settings)
    if not settings_problems and secret is not None and secret.problems and not secret.waiting:
        settings_problems += [Problem(p) for p in secret.problems]
    secret_waiting = not settings_problems and secret is not None and secret.waiting
    requirements, requirements_problems = checks.requirements, checks.requirement_problems
    # the settings, requirements, secret settings, delivery policy and isolation the plugin's
    # entry carries: the new ones, or, when any is refused or a Secret is awaited, those of the
    # version in service (a last good version without an entry cannot keep serving)
    delivery_problems, delivery = checks.delivery_problems, plugin.fields.delivery
    isolation_problems, isolation = checks.isolation_problems, plugin.fields.isolation
    entry_problems = requirements_problems + delivery_problems + isolation_problems
    secret_hash: str | None = None
    if settings_problems or entry_problems or secret_waiting:
        settings = listed.settings if listed is not None else None
        requirements = listed.requirements if listed is not None else ()
        secret_hash = listed.secret_settings_hash if listed is not None else None
        delivery = listed.delivery if listed is not None else None
        isolation = listed.isolation if listed is not None else isolation
    else:
        settings = dict(plugin.fields.settings or {})
        encoded = secret.encoded if secret is not None else None
        secret_hash = version_of(encoded) if encoded is not None else None
    problems: list[Problem] = checks.names + settings_problems + entry_problems
    if existing is not None and not existing.managed:
        problems.append(
            Problem(
                f"ConfigMap {plugin_configmap_name(plugin.name)!r} exists and was not written by the "
                "operator; delete it or rename this LunaPlugin"
            )
        )
    claimant = claims.get(module)
    if enabled and claimant is not None and claimant != plugin.name:
        problems.append(module_taken(module, claimant, plugin.service))
    transient = False
    new: StoredVersion | None = None
    if problems:
        phase = "Invalid"
    elif secret_waiting and secret is not None:
        phase, transient = "Pending", secret.transient
        problems = [Problem(p) for p in secret.problems]
    elif checked is None or checked.code is None:
        phase, transient = "Pending", checked is not None and checked.transient
        problems = [Problem((checked.waiting if checked else None) or "waiting for the code")]
    elif checked.problems:
        phase, problems = "Invalid", list(checked.problems)
    else:
        new = StoredVersion(module, checked.code, code_hash(checked.code), plugin.service)
        phase = "Ready" if enabled else "Disabled"
    message = "; ".join(str(problem) for problem in problems)
    if phase == "Disabled":
        message = "spec.enabled is false"
    # what the ConfigMap holds after the pass: the new version, else the last good one (moved to
    # the plugin's current service); a ConfigMap that is not ours is never touched
    stored = new or (replace(previous, service=plugin.service) if previous is not None else None)
    if existing is not None and not existing.managed:
        stored = None
    in_service: StoredVersion | None = None
    if enabled and new is not None:
        in_service = new
    elif (
        enabled
        and previous is not None
        and settings is not None
        and _free(previous.module, plugin.name, claims, serving)
    ):
        in_service = stored
        kept = f"version {previous.code_hash[:12]} keeps serving"
        if previous.module != module:
            kept += f" as module {previous.module!r}"
        message += f" ({kept})"
    active = None
    if in_service is not None and settings is not None:
        active = ActiveEntry(
            module=in_service.module,
            plugin=plugin.name,
            code_hash=in_service.code_hash,
            config_map=plugin_configmap_name(plugin.name),
            order=plugin.fields.order,
            settings=dict(settings),
            requirements=requirements,
            secret_settings_hash=secret_hash,
            delivery=delivery,
            isolation=isolation,
        )
    return PluginOutcome(plugin, module, phase, bounded(message), stored, active, transient)


def _free(module: str, plugin: str, claims: dict[str, str], serving: set[str]) -> bool:
    """Whether ``plugin`` may keep serving its last good version as ``module``."""
    return claims.get(module, plugin) == plugin and module not in serving


def after_failed_write(
    outcome: PluginOutcome,
    reason: str,
    existing: ExistingConfigMap | None,
    serving: set[str],
    *,
    transient: bool,
) -> PluginOutcome:
    """The outcome once writing the plugin's ConfigMap failed: the ConfigMap still holds what it
    held, so the plugin keeps its last good version if that one can still serve (same service,
    module not taken by another plugin's entry in ``serving``); Invalid when the API server
    refused the write for good, Pending when a later pass may succeed."""
    previous = last_good(outcome.plugin, existing)
    active = None
    message = reason
    if (
        outcome.active is not None
        and previous is not None
        and previous.service == outcome.plugin.service
        and previous.module not in serving
    ):
        active = replace(outcome.active, module=previous.module, code_hash=previous.code_hash)
        message += f" (version {previous.code_hash[:12]} keeps serving)"
    phase = "Pending" if transient else "Invalid"
    return replace(outcome, phase=phase, message=bounded(message), active=active, transient=transient)

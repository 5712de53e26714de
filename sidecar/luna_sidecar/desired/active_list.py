"""The cluster's desired state as the operator writes it, read and checked as untrusted input.

The active-list ConfigMap of a service, ``luna-plugins-<service>``, holds two keys:

- ``LUNA_<SERVICE>_ACTIVE_PLUGINS``: a JSON list of module names in load order;
- ``plugins.json``: a JSON object mapping each of those modules to ``{"codeHash": <sha256 hex>,
  "configMap": <name of the ConfigMap holding <module>.py>, "settings": {...}, "requirements":
  [<PEP 508 requirement>, ...]}`` (``requirements`` optional; more keys are allowed and ignored).

:func:`parse_active_list` accepts exactly that or raises :class:`ActiveListError` saying which
key, which entry and what is wrong; the caller then keeps what runs. An empty list is valid:
it means "no plugins". Code is trusted only by its hash (:func:`code_of`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from luna_contract.requirements import RequirementsError, check_requirements
from luna_contract.secret_settings import ENTRY_FIELD
from luna_plugins.naming import check_module_name

PLUGINS_KEY = "plugins.json"

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a ConfigMap name: a DNS subdomain (RFC 1123), at most 253 characters
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def active_list_name(service: str) -> str:
    """The active-list ConfigMap of ``service``."""
    return f"luna-plugins-{service}"


def active_list_key(service: str) -> str:
    """The active-list key, as the original service's setting: ``LUNA_<SERVICE>_ACTIVE_PLUGINS``."""
    return f"LUNA_{service.upper().replace('-', '_')}_ACTIVE_PLUGINS"


class ActiveListError(ValueError):
    """The active list cannot be used; the message names the ConfigMap, key and entry."""


@dataclass(frozen=True)
class ActiveEntry:
    """One plugin of the active list: the exact code version to run and where it is."""

    module: str
    code_hash: str
    config_map: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    secret_settings: str | None = None
    """the SHA-256 of the plugin's mounted secret settings (``secretSettingsHash``), if it has any"""

    @property
    def code_key(self) -> str:
        """The key of the code in :attr:`config_map`."""
        return f"{self.module}.py"


def parse_active_list(name: str, data: Mapping[str, str], service: str) -> list[ActiveEntry]:
    """The entries of the active-list ConfigMap ``name`` (its ``data``), in load order.

    Raises :class:`ActiveListError` for anything that is not what the operator writes.
    """
    key = active_list_key(service)
    where = f"ConfigMap {name}"
    if key not in data:
        raise ActiveListError(f"{where} has no key {key}")
    modules = _json(data[key], f"{where}, key {key}")
    if not isinstance(modules, list):
        raise ActiveListError(
            f"{where}, key {key}: expected a JSON list of module names, got {_kind(modules)}"
        )
    seen: set[str] = set()
    for index, module in enumerate(modules):
        if not isinstance(module, str):
            raise ActiveListError(f"{where}, key {key}[{index}]: expected a module name, got {_kind(module)}")
        problem = check_module_name(module)
        if problem:
            raise ActiveListError(f"{where}, key {key}[{index}]: {problem}")
        if module in seen:
            raise ActiveListError(f"{where}, key {key}: {module!r} is listed twice")
        seen.add(module)
    if not modules:
        return []
    if PLUGINS_KEY not in data:
        raise ActiveListError(f"{where} has no key {PLUGINS_KEY}")
    details = _json(data[PLUGINS_KEY], f"{where}, key {PLUGINS_KEY}")
    if not isinstance(details, dict):
        raise ActiveListError(f"{where}, key {PLUGINS_KEY}: expected a JSON object, got {_kind(details)}")
    return [
        _entry(module, details.get(module), f"{where}, key {PLUGINS_KEY}, entry {module!r}")
        for module in modules
    ]


def _entry(module: str, raw: Any, where: str) -> ActiveEntry:
    if raw is None:
        raise ActiveListError(f"{where}: missing (every listed module needs one)")
    if not isinstance(raw, dict):
        raise ActiveListError(f"{where}: expected an object, got {_kind(raw)}")
    code_hash = raw.get("codeHash")
    if not isinstance(code_hash, str) or not _SHA256.fullmatch(code_hash):
        raise ActiveListError(f"{where}: codeHash must be a SHA-256 in lower-case hex, got {code_hash!r}")
    config_map = raw.get("configMap")
    if not isinstance(config_map, str) or not _OBJECT_NAME.fullmatch(config_map):
        raise ActiveListError(f"{where}: configMap must be a ConfigMap name, got {config_map!r}")
    settings = raw.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ActiveListError(f"{where}: settings must be an object, got {_kind(settings)}")
    try:
        requirements = check_requirements(raw.get("requirements", []), f"{where}: requirements")
    except RequirementsError as exc:
        raise ActiveListError(str(exc)) from None
    secret_settings = raw.get(ENTRY_FIELD)
    if secret_settings is not None and (
        not isinstance(secret_settings, str) or not _SHA256.fullmatch(secret_settings)
    ):
        raise ActiveListError(
            f"{where}: {ENTRY_FIELD} must be a SHA-256 in lower-case hex, got {secret_settings!r}"
        )
    return ActiveEntry(module, code_hash, config_map, settings, requirements, secret_settings)


def code_of(entry: ActiveEntry, data: Mapping[str, str] | None) -> tuple[bytes | None, str | None]:
    """The code ``entry`` names, from the ``data`` of its ConfigMap (None when that is missing):
    (code, None) when it is exactly the version the hash names, else (None, why not)."""
    if data is None:
        return None, f"ConfigMap {entry.config_map} not found"
    text = data.get(entry.code_key)
    if text is None:
        return None, f"ConfigMap {entry.config_map} has no key {entry.code_key}"
    code = text.encode()
    found = hashlib.sha256(code).hexdigest()
    if found != entry.code_hash:
        named = entry.code_hash[:12]
        return None, f"ConfigMap {entry.config_map} holds code {found[:12]}, the active list names {named}"
    return code, None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ActiveListError(f"{where}: not valid JSON ({exc})") from None


def _kind(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )

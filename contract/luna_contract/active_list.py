"""A service's active list: the one entry type, its encoder and its strict decoder.

The active-list ConfigMap of a service, ``luna-plugins-<service>``
(:func:`luna_contract.names.active_list_name`), holds two keys:

- ``LUNA_<SERVICE>_ACTIVE_PLUGINS``: a JSON list of module names in load order;
- ``plugins.json``: a JSON object mapping each of those modules to ``{"codeHash": <sha256 hex>,
  "configMap": <name of the ConfigMap holding <module>.py>, "plugin": <LunaPlugin name>,
  "settings": {...}, "requirements": [<PEP 508 requirement>, ...], "secretSettingsHash": <sha256
  hex>, "canary": {"codeHash": <sha256 hex>, "configMap": <name>, "pods": [<pod name>, ...]},
  "delivery": <the plugin's delivery policy>, "isolation": "process"}`` (``plugin``,
  ``requirements``, ``secretSettingsHash``, ``canary``, ``delivery`` and ``isolation`` optional;
  more keys are allowed and ignored, so an older reader takes a newer writer's list). ``canary``: a
  staged rollout's new version, run by the pods it names (:meth:`ActiveEntry.for_pod`), as the
  entry says (settings, delivery, isolation). ``isolation`` is written only when it is not
  ``inProcess``.

The operator writes it with :func:`encode_active_list`; the sidecar (and the operator, reading
back what it wrote) takes it with :func:`decode_active_list`, which accepts exactly that or
raises :class:`ActiveListError` saying which key, which entry and what is wrong. An empty list is
valid: it means "no plugins". Code is trusted only by its hash (:func:`code_of`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from luna_contract.code import code_hash, is_sha256
from luna_contract.delivery import DeliveryPolicy, PolicyError, read_policy
from luna_contract.names import PLUGINS_KEY, active_list_key, code_key
from luna_contract.plugin_modules import check_module_name
from luna_contract.requirements import RequirementsError, check_requirements
from luna_contract.secret_settings import ENTRY_FIELD
from luna_contract.spec import IN_PROCESS, ISOLATIONS, Isolation

__all__ = [
    "ActiveEntry",
    "ActiveListError",
    "Canary",
    "code_hashes_of",
    "code_of",
    "decode_active_list",
    "encode_active_list",
    "encode_entry",
]

#: a ConfigMap name: a DNS subdomain (RFC 1123), at most 253 characters
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class ActiveListError(ValueError):
    """The active list cannot be used; the message names the ConfigMap, key and entry."""


@dataclass(frozen=True)
class ActiveEntry:
    """One plugin of a service's active list: the exact code version to run and where it is."""

    module: str
    code_hash: str
    config_map: str
    """the ConfigMap holding the code under :attr:`code_key`"""
    plugin: str | None = None
    """the LunaPlugin this entry is the version in service of (None in lists written by hand)"""
    settings: Mapping[str, Any] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    """PEP 508 requirements in canonical spelling (:mod:`luna_contract.requirements`)"""
    secret_settings_hash: str | None = None
    """the SHA-256 of the plugin's key in the service's settings Secret, if it has one"""
    order: int = 0
    """load order: entries are listed by (order, module); decoded entries carry their position"""
    canary: Canary | None = None
    """a new version under a staged rollout, for the pods it names (None: every pod runs this one)"""
    delivery: DeliveryPolicy | None = None
    """the plugin's ``spec.delivery``; None: the sidecar's delivery settings apply"""
    isolation: Isolation = IN_PROCESS
    """the plugin's ``spec.isolation``: ``process`` runs it in a process of its own"""

    @property
    def code_key(self) -> str:
        """The key of the code in :attr:`config_map`."""
        return code_key(self.module)

    def for_pod(self, pod: str | None) -> ActiveEntry:
        """The entry pod ``pod`` runs: the canary's version when the canary names the pod, else
        this one (either way without :attr:`canary`)."""
        if self.canary is None:
            return self
        if pod is not None and pod in self.canary.pods:
            return replace(
                self, code_hash=self.canary.code_hash, config_map=self.canary.config_map, canary=None
            )
        return replace(self, canary=None)


@dataclass(frozen=True)
class Canary:
    """A staged rollout's new version of an entry's plugin and the pods that run it."""

    code_hash: str
    config_map: str
    """the ConfigMap holding the canary's code under the entry's code key"""
    pods: tuple[str, ...] = ()
    """names of the pods that run it (sorted)"""


def encode_entry(entry: ActiveEntry) -> dict[str, Any]:
    """``entry`` as ``plugins.json`` holds it (optional fields only when set)."""
    details: dict[str, Any] = {
        "codeHash": entry.code_hash,
        "configMap": entry.config_map,
        "settings": dict(entry.settings),
    }
    if entry.plugin is not None:
        details["plugin"] = entry.plugin
    if entry.requirements:
        details["requirements"] = list(entry.requirements)
    if entry.secret_settings_hash is not None:
        details[ENTRY_FIELD] = entry.secret_settings_hash
    if entry.canary is not None:
        details["canary"] = {
            "codeHash": entry.canary.code_hash,
            "configMap": entry.canary.config_map,
            "pods": sorted(entry.canary.pods),
        }
    if entry.delivery is not None:
        # only what differs from the policy's defaults (nested defaults come out as {})
        policy = msgspec.to_builtins(entry.delivery)
        details["delivery"] = {key: value for key, value in policy.items() if value != {}}
    if entry.isolation != IN_PROCESS:  # older sidecars see the lists they know
        details["isolation"] = entry.isolation
    return details


def encode_active_list(service: str, entries: Iterable[ActiveEntry]) -> dict[str, str]:
    """The ``data`` of ``service``'s active list: modules ordered by (order, module name) and
    their entries; the same entries always give the same bytes."""
    ordered = sorted(entries, key=lambda entry: (entry.order, entry.module))
    details = {entry.module: encode_entry(entry) for entry in ordered}
    return {
        active_list_key(service): json.dumps([entry.module for entry in ordered]),
        PLUGINS_KEY: json.dumps(details, sort_keys=True),
    }


def decode_active_list(name: str, data: Mapping[str, str], service: str) -> list[ActiveEntry]:
    """The entries of the active-list ConfigMap ``name`` (its ``data``), in load order.

    Raises :class:`ActiveListError` for anything that is not what :func:`encode_active_list`
    writes."""
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
        _entry(module, details.get(module), index, f"{where}, key {PLUGINS_KEY}, entry {module!r}")
        for index, module in enumerate(modules)
    ]


def _entry(module: str, raw: Any, order: int, where: str) -> ActiveEntry:
    if raw is None:
        raise ActiveListError(f"{where}: missing (every listed module needs one)")
    if not isinstance(raw, dict):
        raise ActiveListError(f"{where}: expected an object, got {_kind(raw)}")
    code_hash = raw.get("codeHash")
    if not is_sha256(code_hash):
        raise ActiveListError(f"{where}: codeHash must be a SHA-256 in lower-case hex, got {code_hash!r}")
    config_map = raw.get("configMap")
    if not isinstance(config_map, str) or not _OBJECT_NAME.fullmatch(config_map):
        raise ActiveListError(f"{where}: configMap must be a ConfigMap name, got {config_map!r}")
    plugin = raw.get("plugin")
    if plugin is not None and (not isinstance(plugin, str) or not _OBJECT_NAME.fullmatch(plugin)):
        raise ActiveListError(f"{where}: plugin must be a LunaPlugin name, got {plugin!r}")
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
    if secret_settings is not None and not is_sha256(secret_settings):
        raise ActiveListError(
            f"{where}: {ENTRY_FIELD} must be a SHA-256 in lower-case hex, got {secret_settings!r}"
        )
    delivery = raw.get("delivery")
    if delivery is not None:
        try:
            delivery = read_policy(delivery)
        except PolicyError as exc:
            raise ActiveListError(f"{where}: {exc}") from None
    isolation = raw.get("isolation", IN_PROCESS)
    if isolation not in ISOLATIONS:
        raise ActiveListError(
            f"{where}: isolation must be one of {', '.join(ISOLATIONS)}, got {_kind(isolation)}"
        )
    return ActiveEntry(
        module,
        str(code_hash),
        config_map,
        plugin,
        settings,
        requirements,
        secret_settings,
        order,
        _canary(raw.get("canary"), f"{where}: canary"),
        delivery,
        isolation,
    )


#: the most pods a canary names (a service's reporting pods)
MAX_CANARY_PODS = 5000


def _canary(raw: Any, where: str) -> Canary | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ActiveListError(f"{where}: expected an object, got {_kind(raw)}")
    code_hash = raw.get("codeHash")
    if not is_sha256(code_hash):
        raise ActiveListError(f"{where}: codeHash must be a SHA-256 in lower-case hex, got {code_hash!r}")
    config_map = raw.get("configMap")
    if not isinstance(config_map, str) or not _OBJECT_NAME.fullmatch(config_map):
        raise ActiveListError(f"{where}: configMap must be a ConfigMap name, got {config_map!r}")
    pods = raw.get("pods", [])
    if not isinstance(pods, list) or len(pods) > MAX_CANARY_PODS:
        raise ActiveListError(f"{where}: pods must be a list of at most {MAX_CANARY_PODS} pod names")
    for index, pod in enumerate(pods):
        if not isinstance(pod, str) or not _OBJECT_NAME.fullmatch(pod):
            raise ActiveListError(f"{where}: pods[{index}] must be a pod name, got {_kind(pod)}")
    return Canary(str(code_hash), config_map, tuple(sorted(set(pods))))


def code_hashes_of(data: Mapping[str, Any], service: str) -> dict[str, str]:
    """Module -> code hash of an active list's ``data``, read leniently: what sidecars following
    it report against. Modules without a readable hash are left out; a list that cannot be read
    at all names none. Never raises."""
    try:
        modules = json.loads(data.get(active_list_key(service)) or "[]")
        details = json.loads(data.get(PLUGINS_KEY) or "{}")
    except (TypeError, ValueError, RecursionError):
        return {}
    if not isinstance(modules, list) or not isinstance(details, dict):
        return {}
    hashes: dict[str, str] = {}
    for module in modules:
        entry = details.get(module) if isinstance(module, str) else None
        if isinstance(entry, dict) and isinstance(entry.get("codeHash"), str):
            hashes[module] = entry["codeHash"]
    return hashes


def code_of(entry: ActiveEntry, data: Mapping[str, str] | None) -> tuple[bytes | None, str | None]:
    """The code ``entry`` names, from the ``data`` of its ConfigMap (None when that is missing):
    (code, None) when it is exactly the version the hash names, else (None, why not)."""
    if data is None:
        return None, f"ConfigMap {entry.config_map} not found"
    text = data.get(entry.code_key)
    if text is None:
        return None, f"ConfigMap {entry.config_map} has no key {entry.code_key}"
    code = text.encode()
    found = code_hash(code)
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

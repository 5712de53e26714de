"""``spec.settingsFrom``: settings whose values come from Secrets (pure functions).

Each item is exactly one of:

- ``{setting: NAME, secretKeyRef: {name: SECRET, key: KEY}}``: the setting ``NAME`` is the value
  of ``KEY`` in ``SECRET``;
- ``{secretRef: {name: SECRET}, prefix: P}``: every key of ``SECRET`` is a setting ``P + key``
  (``prefix`` optional).

Only Secrets labelled ``luna.dev/plugin-settings: "true"`` may be read this way: a Secret has to
be offered to plugins on purpose, because whoever may create a LunaPlugin could otherwise read
any Secret of the namespace through the plugin's code. A setting may not be both in
``spec.settings`` and in ``settingsFrom``.

:func:`resolve` returns the values (never to be logged or shown) or the problems, which name
Secrets and keys only. A missing Secret or key is *waiting* (it may appear later); the rest is
invalid.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from luna_contract.secret_settings import MAX_BYTES, encode

#: the label a Secret needs before plugins may read it
OFFER_LABEL = "luna.dev/plugin-settings"
MAX_ITEMS = 20
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
#: the fields of an item and of its references, as the CRD has them
_ITEM_FIELDS = frozenset({"setting", "secretKeyRef", "secretRef", "prefix"})
_REF_FIELDS = {"secretKeyRef": frozenset({"name", "key"}), "secretRef": frozenset({"name"})}


@dataclass(frozen=True)
class OfferedSecret:
    """A Secret as the operator sees it: whether it is offered to plugins, and its values
    (decoded; ``None`` for a value that is not UTF-8 text)."""

    name: str
    offered: bool
    data: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """The outcome for one plugin: ``values`` when every reference resolved, else ``problems``;
    ``waiting`` when they are only missing Secrets or keys (they may be created later)."""

    values: dict[str, str] | None
    problems: tuple[str, ...] = ()
    waiting: bool = False
    transient: bool = False
    """the wait may end without any change (the Secrets are not listed yet): retry the pass"""

    @property
    def encoded(self) -> bytes | None:
        """What the service's settings Secret holds for the plugin."""
        return encode(self.values) if self.values is not None else None


def referenced_secrets(settings_from: object) -> set[str]:
    """The names of the Secrets ``settings_from`` reads (whatever its shape; for indexing)."""
    names: set[str] = set()
    if isinstance(settings_from, list):
        for item in settings_from:
            if isinstance(item, dict):
                for ref in ("secretKeyRef", "secretRef"):
                    target = item.get(ref)
                    if isinstance(target, dict) and isinstance(target.get("name"), str):
                        names.add(target["name"])
    return names


def check_shape(settings_from: object, settings: object) -> list[str]:
    """What is wrong with ``spec.settingsFrom`` itself (no Secret needed to tell)."""
    if settings_from is None:
        return []
    if not isinstance(settings_from, list):
        return [f"spec.settingsFrom must be a list, not {type(settings_from).__name__}"]
    if len(settings_from) > MAX_ITEMS:
        return [f"spec.settingsFrom has {len(settings_from)} items, at most {MAX_ITEMS} are allowed"]
    problems = []
    plain = set(settings) if isinstance(settings, dict) else set()
    seen: dict[str, int] = {}
    for index, item in enumerate(settings_from):
        where = f"spec.settingsFrom[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        unknown = _unknown_fields(item, _ITEM_FIELDS, where)
        if unknown:
            problems.append(unknown)
            continue
        refs = [ref for ref in ("secretKeyRef", "secretRef") if ref in item]
        if len(refs) != 1:
            problems.append(f"{where} needs exactly one of secretKeyRef and secretRef")
            continue
        target = item[refs[0]]
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            problems.append(f"{where}.{refs[0]}.name must be a Secret name")
            continue
        unknown = _unknown_fields(target, _REF_FIELDS[refs[0]], f"{where}.{refs[0]}")
        if unknown:
            problems.append(unknown)
            continue
        if not _NAME.fullmatch(target["name"]):
            problems.append(f"{where}.{refs[0]}.name {target['name'][:64]!r} is not a Secret name")
        if refs[0] == "secretKeyRef":
            setting, key = item.get("setting"), target.get("key")
            if not isinstance(setting, str) or not _SETTING.fullmatch(setting):
                problems.append(f"{where}.setting must be a setting name (letters, digits, _ . -)")
            elif setting in plain:
                problems.append(f"{where}.setting {setting!r} is also in spec.settings: keep it in one place")
            elif setting in seen:
                problems.append(f"{where}.setting {setting!r} is also spec.settingsFrom[{seen[setting]}]'s")
            else:
                seen[setting] = index
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                problems.append(f"{where}.secretKeyRef.key must be a Secret key")
        else:
            prefix = item.get("prefix", "")
            if not isinstance(prefix, str) or len(prefix) > 64:
                problems.append(f"{where}.prefix must be a string of at most 64 characters")
    return problems


def _unknown_fields(value: dict[Any, Any], known: frozenset[str], where: str) -> str | None:
    """The problem with fields of ``value`` the CRD does not have (the API server refuses them
    under kubectl's strict field validation, or drops them), if any."""
    unknown = sorted(str(key)[:40] for key in value if key not in known)
    if not unknown:
        return None
    listed = ", ".join(repr(key) for key in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
    return f"{where} has a field the CRD does not know: {listed} (it has {', '.join(sorted(known))})"


def resolve(
    settings_from: list[dict[str, Any]], settings: Mapping[str, Any], secrets: Mapping[str, OfferedSecret]
) -> Resolved:
    """The values of a well-shaped ``settingsFrom`` (see :func:`check_shape`) from ``secrets``
    (by name, the plugin's namespace only)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    missing: list[str] = []
    for index, item in enumerate(settings_from):
        where = f"spec.settingsFrom[{index}]"
        ref = "secretKeyRef" if "secretKeyRef" in item else "secretRef"
        name = item[ref]["name"]
        secret = secrets.get(name)
        if secret is None:
            missing.append(
                f"{where}: Secret {name!r} not found, or not offered to plugins (label it {OFFER_LABEL}=true)"
            )
            continue
        if not secret.offered:
            problems.append(
                f"{where}: Secret {name!r} is not offered to plugins: label it {OFFER_LABEL}=true to let "
                "plugins read it"
            )
            continue
        if ref == "secretKeyRef":
            key = item[ref]["key"]
            if key not in secret.data:
                missing.append(f"{where}: Secret {name!r} has no key {key!r}")
                continue
            picked = {item["setting"]: secret.data[key]}
        else:
            prefix = item.get("prefix", "")
            picked = {f"{prefix}{key}": value for key, value in secret.data.items()}
        for setting, value in picked.items():
            if value is None:
                problems.append(
                    f"{where}: the value for setting {setting!r} in Secret {name!r} is not UTF-8 text"
                )
            elif setting in settings:
                problems.append(
                    f"{where}: setting {setting!r} is also in spec.settings: keep it in one place"
                )
            elif setting in values:
                problems.append(f"{where}: setting {setting!r} comes from two places in spec.settingsFrom")
            else:
                values[setting] = value
    if problems:
        return Resolved(None, tuple(problems))
    if missing:
        return Resolved(None, tuple(missing), waiting=True)
    if len(encode(values)) > MAX_BYTES:
        return Resolved(None, (f"the settings from Secrets take more than {MAX_BYTES} bytes",))
    return Resolved(values)


def secret_bytes(body: Mapping[str, Any] | None) -> dict[str, bytes | None]:
    """A Secret's ``data`` (as the API returns it: base64) decoded, by key; None for a value
    that is not base64."""
    found: dict[str, bytes | None] = {}
    for key, encoded in ((body or {}).get("data") or {}).items():
        try:
            found[str(key)] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            found[str(key)] = None
    return found


def offered_secret(body: Mapping[str, Any]) -> OfferedSecret:
    """An :class:`OfferedSecret` from a Secret as the API returns it (base64 ``data``)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    data: dict[str, str | None] = {}
    for key, value in secret_bytes(body).items():
        try:
            data[key] = value.decode() if value is not None else None
        except UnicodeDecodeError:
            data[key] = None
    return OfferedSecret(
        str((body.get("metadata") or {}).get("name")),
        str(labels.get(OFFER_LABEL, "")).lower() == "true",
        data,
    )

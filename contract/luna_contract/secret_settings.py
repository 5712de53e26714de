"""Settings that come from Secrets (``spec.settingsFrom``): how they travel from the operator to
the sidecar without passing through a ConfigMap, a status, an event or a log line.

The operator resolves each plugin's ``settingsFrom`` and keeps, per service, one Secret
``luna-plugins-<service>-settings`` with a key ``<module>.json`` per plugin: a JSON object of the
settings' names to their values (strings). The service's pods mount that Secret (optional, read
only) at :data:`MOUNT_PATH`; the kubelet keeps the files current. The active list names, per
plugin, only the SHA-256 of its key's bytes (``secretSettingsHash``): the sidecar loads a
version once the mounted file has exactly that content, and merges the values into the
plugin's ``self.settings``.
"""

from __future__ import annotations

import hashlib
import json

#: where the service's settings Secret is mounted in the sidecar container
MOUNT_PATH = "/etc/luna-plugins/settings"
#: the active-list entry field naming the version of a plugin's secret settings
ENTRY_FIELD = "secretSettingsHash"
#: a whole Secret holds at most 1 MiB; one plugin's secret settings are kept well below
MAX_BYTES = 64 * 1024


class SecretSettingsError(ValueError):
    """The mounted secret settings cannot be used; the message never contains a value."""


def settings_secret_name(service: str) -> str:
    """The Secret holding the secret settings of ``service``'s plugins."""
    return f"luna-plugins-{service}-settings"


def settings_key(module: str) -> str:
    """The key of one plugin's secret settings in that Secret."""
    return f"{module}.json"


def encode(values: dict[str, str]) -> bytes:
    """The bytes the operator writes for a plugin (stable: sorted keys, no spaces)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


def version_of(data: bytes) -> str:
    """What the active list names: the SHA-256 of the bytes, in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, where: str) -> dict[str, str]:
    """The settings in ``data``: a JSON object of strings, at most :data:`MAX_BYTES`."""
    if len(data) > MAX_BYTES:
        raise SecretSettingsError(f"{where} is {len(data)} bytes, at most {MAX_BYTES} are allowed")
    try:
        loaded = json.loads(data)
    except (ValueError, RecursionError):
        raise SecretSettingsError(f"{where} is not valid JSON") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in loaded.items()
    ):
        raise SecretSettingsError(f"{where} must be a JSON object of strings")
    return loaded

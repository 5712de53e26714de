"""The service's secret settings as the kubelet mounts them: one ``<module>.json`` per plugin.

The kubelet updates a mounted Secret by writing a new timestamped folder and switching the
``..data`` link to it, so a change shows as a new target of that link; :meth:`changed` notices it
(called about once a second). Values are never logged or shown: messages name files only.
"""

from __future__ import annotations

import os
from pathlib import Path

from luna_contract.secret_settings import SecretSettingsError, decode, settings_key, version_of


class SecretSettingsDir:
    """A read-only view of the mounted settings Secret (``None`` path: nothing is mounted)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[object, ...] | None = None

    def _fingerprint(self) -> tuple[object, ...]:
        assert self.path is not None
        try:
            link = os.readlink(self.path / "..data")
        except OSError:
            link = ""
        try:
            entries = tuple(sorted((entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(self.path)))
        except OSError:
            entries = ()
        return (link, entries)

    def reading(self) -> None:
        """Call before the files are read for a desired state: a change the kubelet makes from
        now on (even before the first :meth:`changed`) is one :meth:`changed` reports."""
        if self.path is not None:
            self._seen = self._fingerprint()

    def changed(self) -> bool:
        """Whether the mounted content changed since the last call or :meth:`reading` (False
        when neither came before)."""
        if self.path is None:
            return False
        current = self._fingerprint()
        seen, self._seen = self._seen, current
        return seen is not None and seen != current

    def read(self, module: str, version: str) -> tuple[dict[str, str] | None, str | None]:
        """``module``'s secret settings when the mounted file is exactly ``version`` (the SHA-256
        the active list names): (values, None); else (None, why not)."""
        name = settings_key(module)
        if self.path is None:
            return None, (
                "it has secret settings (spec.settingsFrom) but this sidecar has no "
                "--secret-settings-dir (the service's settings Secret is not mounted)"
            )
        try:
            data = (self.path / name).read_bytes()
        except FileNotFoundError:
            return None, f"its secret settings ({name}) are not mounted yet"
        except OSError as exc:
            return None, f"cannot read its secret settings ({name}): {exc.strerror}"
        if version_of(data) != version:
            return None, (
                f"the mounted secret settings ({name}) are not yet the version the active list names "
                "(the kubelet updates mounted Secrets within about a minute)"
            )
        try:
            return decode(data, f"mounted {name}"), None
        except SecretSettingsError as exc:
            return None, str(exc)

"""Desired state: which plugin modules should run, in which order, with which code.

A source turns wherever plugins come from (a directory and an active list here; the Kubernetes
API in cluster mode) into a list of :class:`DesiredPlugin`, which ``Runtime.apply`` converges on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luna_contract.code import code_hash
from luna_contract.delivery import DeliveryPolicy
from luna_contract.requirements import RequirementsError, check_requirements, requirements_file_entries
from luna_contract.spec import IN_PROCESS, PROCESS, Isolation
from luna_sidecar.config import ConfigError, parse_active_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginSource:
    """One version of one plugin module: its code and where it came from."""

    module: str
    code: bytes
    origin: str
    """File name shown in tracebacks and errors."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    code_hash: str = ""
    requirements: tuple[str, ...] = ()
    """Python packages the plugin needs (PEP 508), installed before it is loaded."""
    delivery: DeliveryPolicy | None = None
    """The plugin's own delivery policy (its LunaPlugin's ``spec.delivery``); None: the
    sidecar's delivery settings apply."""
    isolation: Isolation = IN_PROCESS
    """``inProcess`` (the default) or ``process``: the plugin runs in a process of its own
    (``--isolate``, or its LunaPlugin's ``spec.isolation``)"""

    def __post_init__(self) -> None:
        if not self.code_hash:
            object.__setattr__(self, "code_hash", code_hash(self.code))


@dataclass(frozen=True)
class DesiredPlugin:
    """An entry of the active list: its source, or why the source could not be read."""

    module: str
    source: PluginSource | None
    error: str | None = None


class DirectorySource:
    """Standalone mode: plugin files ``DIR/NAME.py`` and an active list.

    The active list is fixed (``--active`` or ``LUNA_<SERVICE>_ACTIVE_PLUGINS``) or read from a
    file on every :meth:`read`. Optional per-plugin settings come from ``DIR/NAME.settings.json``
    and requirements from ``DIR/NAME.requirements.txt`` (one per line; ``#`` starts a comment).
    The directory is put on ``sys.path`` by the runtime, so plugins may import helper modules
    that sit beside them.
    """

    def __init__(
        self,
        plugins_dir: Path,
        *,
        active: tuple[str, ...] | None = None,
        active_file: Path | None = None,
        isolated: frozenset[str] = frozenset(),
    ) -> None:
        self.plugins_dir = plugins_dir
        #: modules that run in a process of their own (``--isolate``)
        self.isolated = isolated
        self._active = active
        self._active_file = active_file

    def active_list(self) -> tuple[str, ...]:
        """The active list as it is now; raises :class:`ConfigError` when the file is unusable."""
        if self._active is not None:
            return self._active
        if self._active_file is None:
            return ()
        try:
            text = self._active_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read active-list file {self._active_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"active-list file {self._active_file} is not UTF-8 text: {exc.reason}"
            ) from None
        try:
            return parse_active_list(text)
        except ConfigError as exc:
            raise ConfigError(f"{self._active_file}: {exc}") from None

    def read(self) -> list[DesiredPlugin]:
        """The desired plugins in load order; unreadable files become entries with an error."""
        desired = []
        for module in self.active_list():
            path = self.plugins_dir / f"{module}.py"
            try:
                code = path.read_bytes()
            except FileNotFoundError:
                desired.append(DesiredPlugin(module, None, f"plugin file not found: {path}"))
                continue
            except OSError as exc:
                desired.append(DesiredPlugin(module, None, f"cannot read {path}: {exc.strerror}"))
                continue
            settings, error = self._settings(module)
            requirements, requirements_error = self._requirements(module)
            if error or requirements_error:
                desired.append(DesiredPlugin(module, None, error or requirements_error))
                continue
            source = PluginSource(
                module,
                code,
                str(path),
                settings,
                requirements=requirements,
                isolation=PROCESS if module in self.isolated else IN_PROCESS,
            )
            desired.append(DesiredPlugin(module, source))
        return desired

    def _requirements(self, module: str) -> tuple[tuple[str, ...], str | None]:
        path = self.plugins_dir / f"{module}.requirements.txt"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return (), None
        except (OSError, UnicodeDecodeError) as exc:
            return (), f"cannot read requirements file {path}: {exc}"
        entries = [entry for _, entry in requirements_file_entries(text)]
        try:
            return check_requirements(entries, str(path)), None
        except RequirementsError as exc:
            return (), str(exc)

    def _settings(self, module: str) -> tuple[dict[str, Any], str | None]:
        path = self.plugins_dir / f"{module}.settings.json"
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError) as exc:
            return {}, f"cannot read settings file {path}: {exc}"
        if not isinstance(loaded, dict):
            return {}, f"settings file {path} must hold a JSON object"
        return loaded, None

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """A cheap summary of the files that matter (name, mtime, size); changes when they do."""
        entries = []
        candidates = [
            *self.plugins_dir.glob("*.py"),
            *self.plugins_dir.glob("*.settings.json"),
            *self.plugins_dir.glob("*.requirements.txt"),
        ]
        if self._active_file is not None:
            candidates.append(self._active_file)
        for path in candidates:
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(entries))

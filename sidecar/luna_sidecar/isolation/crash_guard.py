"""A plugin version that took the whole sidecar down while it loaded is not loaded again.

In-process isolation cannot survive ``os._exit()`` or a crash in C code during a plugin's import,
construction, ``initialize()`` or ``start()``; the container restarts, loads the same version and
dies again: a crash loop that takes every plugin of the service down with it. So before loading
a version the runtime writes a marker naming it (in ``--state-dir``, which survives container
restarts on the pod's ``/tmp`` volume) and removes it once the load ended either way. A marker
found at start-up means the last process died while loading that version: it is quarantined,
recorded in the same directory, until its code changes or SIGHUP retries it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CrashGuard"]

log = logging.getLogger(__name__)

LOADING = "loading.json"
QUARANTINED = "crash-quarantine.json"


class CrashGuard:
    """Markers and quarantines in ``directory``; without one, nothing is remembered."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._quarantined: dict[str, str] = {}
        if directory is None:
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot use the state directory %s (%s): crash quarantine is off", directory, exc)
            self.directory = None
            return
        self._quarantined = self._read(QUARANTINED)
        crashed = self._read(LOADING)
        if crashed:
            for module, code_hash in crashed.items():
                log.error(
                    "the last sidecar process exited while loading plugin %s (code %s): quarantined",
                    module,
                    code_hash[:12],
                )
            self._quarantined.update(crashed)
            self._write(QUARANTINED, self._quarantined)
            self._remove(LOADING)

    def quarantined(self, module: str) -> str | None:
        """The code hash of ``module`` that crashed the sidecar while loading, if any."""
        return self._quarantined.get(module)

    def release(self, module: str | None = None) -> None:
        """Forget the quarantine of ``module`` (its code changed), or of every module (SIGHUP)."""
        if module is None:
            changed = bool(self._quarantined)
            self._quarantined = {}
        else:
            changed = self._quarantined.pop(module, None) is not None
        if changed:
            self._write(QUARANTINED, self._quarantined)

    @contextlib.contextmanager
    def loading(self, module: str, code_hash: str) -> Iterator[None]:
        """Mark ``module``'s version as loading for the duration of the block."""
        self._write(LOADING, {module: code_hash})
        try:
            yield
        finally:
            self._remove(LOADING)

    # --- files ------------------------------------------------------------------------------

    def _read(self, name: str) -> dict[str, str]:
        if self.directory is None:
            return {}
        try:
            data = json.loads((self.directory / name).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.directory / name, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(key): str(value) for key, value in data.items() if isinstance(value, str)}

    def _write(self, name: str, data: dict[str, str]) -> None:
        if self.directory is None:
            return
        target = self.directory / name
        tmp = target.with_name(f".{name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot write %s: %s", target, exc)

    def _remove(self, name: str) -> None:
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()

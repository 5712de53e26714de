"""Sidecar reports (``LunaPluginRuntime`` bodies) shaped as the sidecar's ``RuntimeReporter`` writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

NOW = 1_800_000_000.0
"""a fixed "now" (epoch seconds) for report books in tests"""


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def report(
    pod: str,
    plugins: dict[str, str | dict[str, Any]] | None = None,
    *,
    service: str = "handlers",
    namespace: str = "ns",
    beat: float = NOW,
    uid: str | None = None,
) -> dict[str, Any]:
    """A report of ``pod``; ``plugins`` maps a module to the hash it runs, or to the entry itself."""
    entries = []
    for module, value in (plugins or {}).items():
        entry = {"state": "running", "codeHash": value} if isinstance(value, str) else dict(value)
        entries.append({"module": module, **entry})
    return {
        "apiVersion": "luna.dev/v1alpha1",
        "kind": "LunaPluginRuntime",
        "metadata": {
            "name": f"{pod}-{service}",
            "namespace": namespace,
            "uid": uid or f"uid-{pod}-{service}",
        },
        "spec": {
            "service": service,
            "pod": pod,
            "ready": True,
            "heartbeatTime": iso(beat),
            "plugins": entries,
            "problems": [],
        },
    }

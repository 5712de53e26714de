"""Sidecar reports (``LunaPluginRuntime`` bodies) shaped as the sidecar's ``RuntimeReporter`` writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from luna_sidecar.kube.kube_report import RuntimeReporter

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


def pod_reporter(
    plugins: list[dict[str, Any]], code_hashes: dict[str, str] | None, **more: Any
) -> RuntimeReporter:
    """The sidecar's reporter of pod-a of service handlers in namespace ns, describing ``plugins``
    (as ``GET /plugins`` does) with the active list's ``code_hashes``; ``more``: its other
    arguments (``rollouts``, ...). It makes no API call unless a test gives it one."""
    return RuntimeReporter(
        object(),  # type: ignore[arg-type]  # no API call is made through it
        namespace="ns",
        service="handlers",
        pod="pod-a",
        pod_uid="uid-a",
        plugins=lambda: plugins,
        ready=lambda: True,
        code_hashes=lambda: code_hashes,
        **more,
    )

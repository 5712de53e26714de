"""How a sidecar's report (``LunaPluginRuntime``) says what it runs, in few bytes.

A service's active list names a code hash per module. A sidecar that runs exactly that does not
repeat it: its report carries the list's *revision* (:func:`active_revision`: a digest of the
list's modules and code hashes) in ``spec.revision``, and ``spec.plugins`` holds only the
modules where it differs from it: a module that fails, loads, stops, waits for its code or
packages, runs another version, blocked the event loop, has undelivered batches, dead letters or
an open delivery breaker, or is not in the list at all. A
module the list names and the report leaves out runs, as ``running``, the version the list names.

So a report stays a few hundred bytes however many plugins a service has: with 200 plugins and
500 pods the API server would otherwise store and fan out 500 copies of 20 KB on every
heartbeat and every rollout. A report without ``spec.revision`` lists every module it runs (what
sidecars did before, and do when the cluster's CRD is too old to keep the field).

Both sides compute the revision with this function from what the active list holds, so the
operator can expand a report without asking anyone.

The report itself is written from :class:`RuntimeReportSpec` and :class:`PluginReport` by
:func:`report_body`; the operator reads reports leniently (a report is untrusted input, and a
thousand of them arrive every heartbeat), and a test reads every field the writer writes back
through the operator's reader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from luna_contract.names import (
    API_VERSION,
    KIND_RUNTIME,
    LABEL_SERVICE,
    MANAGED_BY_SIDECAR,
    report_name,
)

__all__ = [
    "INSTALLED",
    "MAX_REVISION_CHARS",
    "REVISION_FIELD",
    "RUNNING",
    "WAITING",
    "DeliveryReport",
    "PluginReport",
    "ProcessReport",
    "RuntimeReportSpec",
    "active_revision",
    "differences",
    "report_body",
]

#: the report field naming the active list's revision
REVISION_FIELD = "revision"
#: the state a report gives a module the active list names but the sidecar does not run yet
WAITING = "waiting"
#: the state of a module that runs (``codeHash`` says which version)
RUNNING = "running"
#: the packages state of a module whose requirements are installed
INSTALLED = "installed"
#: the longest revision read from a report (a revision is 32 hex characters)
MAX_REVISION_CHARS = 64


def active_revision(code_hashes: Mapping[str, str]) -> str:
    """The revision of an active list that names ``code_hashes`` (module -> code hash): 32 hex
    characters of a SHA-256 over the sorted pairs; the same for the same pairs in any order,
    different when any module or hash differs."""
    digest = hashlib.sha256()
    for module, code_hash in sorted(code_hashes.items()):
        digest.update(f"{module}\0{code_hash}\n".encode())
    return digest.hexdigest()[:32]


class DeliveryReport(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The durable delivery of one at-least-once plugin, summed over its classes: written only
    while it says something (a backlog, dead letters, a breaker not closed), so an idle plugin
    adds nothing to its report."""

    pending: int = 0
    """batches not delivered yet"""
    oldest_batch_age_seconds: int = 0
    """age of the oldest of them, whole seconds"""
    dead_letters: int = 0
    """dead letters held"""
    breaker: str = "closed"
    """the worst state of its classes' circuit breakers: ``open``, ``half-open`` or ``closed``"""


class ProcessReport(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """An isolated plugin's process, reported once it has ended since the version started, or
    while it does not run."""

    state: str = "running"
    """``running``, ``restarting`` or ``quarantined``"""
    restarts: int = 0
    last_exit: str | None = None
    """why it last ended (``killed by SIGSEGV``, ``memory: ...``, ``stalled: ...``)"""


class PluginReport(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One module as a sidecar reports it (fields left out when unset)."""

    module: str
    state: str
    """``running``, ``failed``, ``loading``, ``stopped``, ``waiting``, ..."""
    code_hash: str | None = None
    """the version that runs"""
    failed_code_hash: str | None = None
    """a version that failed to load (a newer one, while ``code_hash`` keeps running)"""
    error: str | None = None
    loop_blocked_seconds: float | None = None
    """how long this plugin blocked the event loop (absent: not at all)"""
    requirements: str | None = None
    """its packages: ``installing``, ``installed`` or ``failed`` (absent without requirements)"""
    callbacks: int | None = None
    """event callbacks finished by the version that runs (ok or not), since it started; these
    five figures are reported only while the plugin is under a staged rollout"""
    failed_callbacks: int | None = None
    """of those, the ones that raised or timed out"""
    route_answers: int | None = None
    """answers of its routes since the version started"""
    route_errors: int | None = None
    """of those, the 5xx ones"""
    dropped: int | None = None
    """batches dropped for it since the version started, any reason"""
    delivery: DeliveryReport | None = None
    """its durable delivery, while it has a backlog, dead letters or a breaker not closed"""
    process: ProcessReport | None = None
    """its own process (``spec.isolation: process``), once it has ended or while it is down"""

    def as_named(self, code_hashes: Mapping[str, str]) -> bool:
        """Whether this entry says no more than "runs the version the active list names"."""
        return (
            self.state == RUNNING
            and self.code_hash is not None
            and self.code_hash == code_hashes.get(self.module)
            and self.requirements in (None, INSTALLED)
            and self.failed_code_hash is None
            and self.error is None
            and self.loop_blocked_seconds is None
            and self.callbacks is None
            and self.route_answers is None
            and self.delivery is None
            and self.process is None
        )


class RuntimeReportSpec(msgspec.Struct, frozen=True, rename="camel"):
    """The ``spec`` of a ``LunaPluginRuntime``. Every field is always written (a merge patch of
    ``null`` removes a stored ``revision``; ``problems`` is written empty to clear old ones)."""

    service: str
    pod: str
    ready: bool
    heartbeat_time: str
    """RFC 3339 in UTC with microseconds"""
    problems: list[str]
    revision: str | None
    """the active list's :func:`active_revision` (then ``plugins`` lists only differences), or
    None: ``plugins`` lists every module the sidecar runs"""
    plugins: list[PluginReport]


def differences(plugins: list[PluginReport], code_hashes: Mapping[str, str]) -> list[PluginReport]:
    """The entries of a report that differ from an active list naming ``code_hashes``: every
    entry that says more than "runs the named version", and a ``waiting`` entry for each named
    module the sidecar does not run at all."""
    reported = {plugin.module for plugin in plugins}
    return [plugin for plugin in plugins if not plugin.as_named(code_hashes)] + [
        PluginReport(module, WAITING) for module in code_hashes if module not in reported
    ]


def report_body(spec: RuntimeReportSpec, *, pod_uid: str | None) -> dict[str, Any]:
    """The ``LunaPluginRuntime`` object of ``spec`` (as JSON-ready builtins), owned by its Pod
    when ``pod_uid`` is known, so Kubernetes deletes it with the Pod."""
    metadata: dict[str, Any] = {
        "name": report_name(spec.pod, spec.service),
        "labels": {LABEL_SERVICE: spec.service, "app.kubernetes.io/managed-by": MANAGED_BY_SIDECAR},
    }
    if pod_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": spec.pod, "uid": pod_uid}]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND_RUNTIME,
        "metadata": metadata,
        "spec": msgspec.to_builtins(spec),
    }

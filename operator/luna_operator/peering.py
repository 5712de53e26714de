"""Several operator replicas, one active: kopf's peering, set up so it works out of the box.

kopf pauses an operator only for peers of a *higher* priority; replicas of equal priority would
all keep working. Each replica therefore takes a random priority unless one is given, and the
peering object (``KopfPeering`` per watched namespace, ``ClusterKopfPeering`` when watching all)
is created when missing, in each namespace independently: one namespace that refuses or does not
exist does not keep the others from getting theirs.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("luna.operator")


class PeeringSetupError(RuntimeError):
    """Peering was asked for but cannot work here; the message says what to install."""


def replica_priority(given: int | None) -> int:
    """``given``, or a random priority that makes one replica of several the active one."""
    return given if given is not None else random.randint(1, 1_000_000)


async def ensure_peering_objects(api: client.ApiClient, name: str, namespaces: tuple[str, ...]) -> list[str]:
    """Create the peering object(s) named ``name`` where they do not exist yet.

    Returns one line per namespace where that failed (forbidden, no such namespace...), already
    logged; the namespaces that answered are set up regardless. Raises
    :class:`PeeringSetupError` when kopf's peering CRDs are not installed (nothing can work)."""
    custom = client.CustomObjectsApi(api)
    body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
    if not namespaces:
        try:
            await custom.create_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"}
            )
        except ApiException as exc:
            return _answer(exc, f"ClusterKopfPeering {name!r}")
        return []
    problems: list[str] = []
    for namespace in namespaces:
        try:
            await custom.create_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", {**body, "kind": "KopfPeering"}
            )
        except ApiException as exc:
            problems += _answer(exc, f"KopfPeering {name!r} in namespace {namespace!r}")
    return problems


def _answer(exc: ApiException, what: str) -> list[str]:
    """Nothing for 409 (it exists already); the problem otherwise; raise when the CRD is missing."""
    if exc.status == 409:
        return []
    details = _details(exc)
    if exc.status == 404 and details.get("kind") != "namespaces":
        raise PeeringSetupError(
            "--peering needs kopf's peering CRDs: kubectl apply -f crds/kopf-peerings.yaml"
        ) from None
    problem = f"cannot create {what}: HTTP {exc.status} {details.get('message') or exc.reason}"
    log.warning("%s; create it yourself, or that namespace has no peering", problem)
    return [problem]


def _details(exc: ApiException) -> dict[str, str]:
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        return {}
    details = status.get("details") or {}
    return {"kind": str(details.get("kind") or ""), "message": str(status.get("message") or "")}


def own_identity() -> str:
    """This replica's peering identity: ``POD_ID`` (the chart sets the pod name), else
    ``user@host/pid``. Handed to kopf, and looked for in the peering objects."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"


def is_active(status: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """Whether kopf keeps this replica working, by the peers a peering object lists: no other live
    peer has a higher priority, nor the same one (then kopf pauses them all)."""
    for peer, info in status.items():
        if peer == identity or not isinstance(info, dict):
            continue
        try:
            seen = datetime.fromisoformat(str(info.get("lastseen")).replace("Z", "+00:00"))
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=UTC)
            alive = (now - seen).total_seconds() < int(info.get("lifetime") or 60)
            their_priority = int(info.get("priority") or 0)
        except (TypeError, ValueError):
            continue
        if alive and their_priority >= priority:
            return False
    return True


class PeeringGate:
    """Whether this replica is the active one, read from kopf's peering object(s) at most every
    ``ttl`` seconds (one GET each). kopf pauses its own handlers on a standby replica; the
    operator's own loops (the report watch, the resync) ask this before every pass, so a standby
    replica never writes from a view it no longer keeps current."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespaces: tuple[str, ...],
        *,
        identity: str,
        priority: int,
        ttl: float = 5.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.name = name
        self.namespaces = namespaces
        self.identity = identity
        self.priority = priority
        self.ttl = ttl
        self._checked = -math.inf
        self._active = False

    async def _status(self, namespace: str | None) -> Mapping[str, Any]:
        """The peers the peering object of ``namespace`` lists; none where it does not exist
        (kopf does not pause for a namespace without one either). Read with a LIST by name: the
        verbs kopf's peering needs anyway (list, watch, patch), no more."""
        selector = f"metadata.name={self.name}"
        if namespace is None:
            found = await self.custom.list_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", field_selector=selector
            )
        else:
            found = await self.custom.list_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", field_selector=selector
            )
        items = found.get("items") if isinstance(found, dict) else None
        status = items[0].get("status") if items and isinstance(items[0], dict) else None
        return status if isinstance(status, dict) else {}

    async def active(self) -> bool:
        if time.monotonic() - self._checked < self.ttl:
            return self._active
        try:
            statuses = [await self._status(namespace) for namespace in self.namespaces or (None,)]
        except Exception as exc:  # unknown: keep the last answer, ask again next time
            log.warning("could not read the peering object %r: %s", self.name, exc)
            return self._active
        now = datetime.now(UTC)
        self._active = all(is_active(status, self.identity, self.priority, now) for status in statuses)
        self._checked = time.monotonic()
        return self._active

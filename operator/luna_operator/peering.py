"""Several operator replicas, one active: kopf's peering, set up so it works out of the box.

kopf pauses an operator only for peers of a *higher* priority; replicas of equal priority would
all keep working. Each replica therefore takes a random priority unless one is given, and the
peering object (``KopfPeering`` per watched namespace, ``ClusterKopfPeering`` when watching all)
is created when missing, in each namespace independently: one namespace that refuses or does not
exist does not keep the others from getting theirs.
"""

from __future__ import annotations

import json
import logging
import random

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

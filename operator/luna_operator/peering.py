"""Several operator replicas, one active: kopf's peering, set up so it works out of the box.

kopf pauses an operator only for peers of a *higher* priority; replicas of equal priority would
all keep working. Each replica therefore takes a random priority unless one is given, and the
peering object (``KopfPeering`` per watched namespace, ``ClusterKopfPeering`` when watching all)
is created when missing.
"""

from __future__ import annotations

import random

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException


class PeeringSetupError(RuntimeError):
    """Peering was asked for but cannot work here; the message says what to install."""


def replica_priority(given: int | None) -> int:
    """``given``, or a random priority that makes one replica of several the active one."""
    return given if given is not None else random.randint(1, 1_000_000)


async def ensure_peering_objects(name: str, namespaces: tuple[str, ...]) -> None:
    """Create the peering object(s) named ``name`` if they do not exist yet."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    async with client.ApiClient() as api:
        custom = client.CustomObjectsApi(api)
        body = {"apiVersion": "kopf.dev/v1", "metadata": {"name": name}}
        try:
            if namespaces:
                for namespace in namespaces:
                    await custom.create_namespaced_custom_object(
                        "kopf.dev", "v1", namespace, "kopfpeerings", {**body, "kind": "KopfPeering"}
                    )
            else:
                await custom.create_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", {**body, "kind": "ClusterKopfPeering"}
                )
        except ApiException as exc:
            if exc.status == 404:
                raise PeeringSetupError(
                    "--peering needs kopf's peering CRDs: kubectl apply -f crds/kopf-peerings.yaml"
                ) from None
            if exc.status != 409:  # 409: it exists already
                raise

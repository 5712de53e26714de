"""The sidecar runs as its Pod's own ServiceAccount: the operator grants that account what the
sidecar needs, in the Pod's namespace, when it injects the sidecar.

What the sidecar needs (read its service's ConfigMaps, keep its own report) is one ClusterRole
the chart makes; :class:`SidecarAccess` keeps, per namespace, one RoleBinding of that ClusterRole
whose subjects are the ServiceAccounts of the Pods it injected there. Nothing else is granted:
the operator may bind only that ClusterRole (RBAC's ``bind`` verb on it by name), and the report
guard lets a sidecar write only its own Pod's report whatever its account. Accounts stay bound
once bound (a binding is cheap, and a later Pod of the account needs it again); the bindings are
owned by the ClusterRole, so they go with it (``helm uninstall``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from luna_contract.names import LABEL_ROLE, MANAGED_BY_OPERATOR
from luna_operator.errors import ApiError

log = logging.getLogger("luna.operator")

__all__ = ["DEFAULT_BINDING", "RoleBindingApi", "SidecarAccess"]

DEFAULT_BINDING = "luna-plugins-sidecar-access"
ROLE_SIDECAR_ACCESS = "sidecar-access"


class RoleBindingApi(Protocol):
    """The RoleBinding calls :class:`SidecarAccess` makes (``KubeClusterApi`` has them)."""

    async def read_role_binding(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def read_cluster_role(self, name: str) -> dict[str, Any] | None: ...

    async def create_role_binding(self, namespace: str, body: dict[str, Any]) -> None: ...

    async def patch_role_binding(
        self, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> None: ...


def _subject(namespace: str, account: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": account, "namespace": namespace}


class SidecarAccess:
    """Binds ``cluster_role`` to the ServiceAccounts of injected Pods, one RoleBinding
    ``binding`` per namespace. :meth:`grant` is idempotent and remembers what it granted, so
    the Pods of an account after its first cost no API call."""

    def __init__(self, cluster_role: str, *, binding: str = DEFAULT_BINDING, attempts: int = 3) -> None:
        self.cluster_role = cluster_role
        self.binding = binding
        self.attempts = attempts
        self.api: RoleBindingApi | None = None
        """set once the operator is connected; until then :meth:`grant` raises ApiError"""
        self._granted: set[tuple[str, str]] = set()
        self._owner: dict[str, Any] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    async def grant(self, namespace: str, account: str) -> bool:
        """Make sure ``account`` of ``namespace`` holds the sidecar's ClusterRole there; True
        when this call had to change the binding. Raises :class:`ApiError` when it cannot."""
        if (namespace, account) in self._granted:
            return False
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            if (namespace, account) in self._granted:
                return False
            changed = await self._grant(namespace, account)
            self._granted.add((namespace, account))
            return changed

    async def _grant(self, namespace: str, account: str) -> bool:
        api = self.api
        if api is None:
            raise ApiError(None, "not connected to the API server yet")
        wanted = _subject(namespace, account)
        for attempt in range(1, self.attempts + 1):
            found = await api.read_role_binding(namespace, self.binding)
            if found is None:
                owner = await self._owner_reference(api)
                try:
                    await api.create_role_binding(namespace, self._body(namespace, [wanted], owner))
                    return True
                except ApiError as exc:
                    if exc.status == 409 and attempt < self.attempts:  # created meanwhile
                        continue
                    raise
            subjects = found.get("subjects") or []
            if wanted in subjects:
                return False
            ref = found.get("roleRef") or {}
            role = f"{ref.get('kind')} {ref.get('name')!r}"
            if (ref.get("kind"), ref.get("name")) != ("ClusterRole", self.cluster_role):
                raise ApiError(
                    None,
                    f"RoleBinding {namespace}/{self.binding} exists and binds {role}, not ClusterRole "
                    f"{self.cluster_role!r}: rename or delete it",
                )
            version = (found.get("metadata") or {}).get("resourceVersion")
            operations: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": version},
                {"op": "add", "path": "/subjects/-", "value": wanted}
                if subjects
                else {"op": "add", "path": "/subjects", "value": [wanted]},
            ]
            try:
                await api.patch_role_binding(namespace, self.binding, operations)
                log.info(
                    "sidecar access: bound ServiceAccount %s/%s to %s", namespace, account, self.cluster_role
                )
                return True
            except ApiError as exc:
                if exc.status in (409, 422) and attempt < self.attempts:  # written meanwhile
                    continue
                raise
        raise ApiError(None, f"RoleBinding {namespace}/{self.binding} kept changing")  # pragma: no cover

    async def _owner_reference(self, api: RoleBindingApi) -> dict[str, Any]:
        """An ownerReference to the sidecar's ClusterRole (read once; it must exist)."""
        if self._owner is None:
            role = await api.read_cluster_role(self.cluster_role)
            uid = ((role or {}).get("metadata") or {}).get("uid")
            if not uid:
                raise ApiError(None, f"ClusterRole {self.cluster_role!r} (--sidecar-cluster-role) not found")
            self._owner = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "name": self.cluster_role,
                "uid": str(uid),
            }
        return self._owner

    def _body(self, namespace: str, subjects: list[dict[str, str]], owner: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": self.binding,
                "namespace": namespace,
                "ownerReferences": [owner],
                "labels": {
                    LABEL_ROLE: ROLE_SIDECAR_ACCESS,
                    "app.kubernetes.io/managed-by": MANAGED_BY_OPERATOR,
                },
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": self.cluster_role,
            },
            "subjects": subjects,
        }

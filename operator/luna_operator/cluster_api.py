"""The few Kubernetes API calls a pass makes, behind one small interface.

:class:`ClusterApi` is what :class:`~luna_operator.reconciler.ServiceReconciler` and
:class:`~luna_operator.status.StatusWriter` write through; :class:`KubeClusterApi` is the real
one (kubernetes_asyncio, bodies as plain dicts, every request and error counted in
:class:`~luna_operator.metrics.OperatorMetrics`). Every failure is an
:class:`~luna_operator.errors.ApiError`, whatever the client library raised.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client

from luna_contract.names import GROUP, VERSION
from luna_contract.names import PLURAL_PLUGINS as PLURAL
from luna_operator.errors import ApiError
from luna_operator.metrics import OperatorMetrics

#: the Accept header of a list that returns metadata only
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
#: Pods per page of a metadata list
POD_PAGE = 500


class ClusterApi(Protocol):
    """Reads and writes of one pass; bodies are plain dicts as the API returns them."""

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None when there is none of that name."""
        ...

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create it; returns what the API server stored."""
        ...

    async def replace_config_map(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace it (``body`` carries the resourceVersion it replaces); returns what was stored."""
        ...

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Secret (a service's settings Secret); returns what the API server stored."""
        ...

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace a Secret (``body`` carries the resourceVersion it replaces)."""
        ...

    async def patch_plugin_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into the LunaPlugin's status subresource."""
        ...

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        """Post a core/v1 Event."""
        ...


class KubeClusterApi:
    """:class:`ClusterApi` over a kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api: client.ApiClient, metrics: OperatorMetrics, *, timeout: float = 30.0) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.metrics = metrics
        self.timeout = timeout
        self.pod_page = POD_PAGE
        """Pods per page of :meth:`list_pod_metadata`"""

    async def _call(self, verb: str, resource: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``call`` unparsed; returns the decoded body, raises :class:`ApiError`."""
        self.metrics.api_requests.labels(verb, resource).inc()
        try:
            response = await call(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            try:
                raw = await response.read()
                status = response.status
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.metrics.api_errors.labels(verb, resource, "none").inc()
            raise ApiError(None, f"{type(exc).__name__}: {exc}") from None
        if not 200 <= status <= 299:
            self.metrics.api_errors.labels(verb, resource, str(status)).inc()
            raise ApiError(status, _message(raw))
        return json.loads(raw) if raw else None

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self._call(
                "get", "configmaps", self.core.read_namespaced_config_map, name, namespace
            )
        except ApiError as exc:
            if exc.status in (404, 422):  # 422: a name no ConfigMap can have
                return None
            raise
        return found

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self._call(
            "create", "configmaps", self.core.create_namespaced_config_map, namespace, body
        )
        return created

    async def replace_config_map(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        replaced: dict[str, Any] = await self._call(
            "update", "configmaps", self.core.replace_namespaced_config_map, name, namespace, body
        )
        return replaced

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self._call(
            "create", "secrets", self.core.create_namespaced_secret, namespace, body
        )
        return created

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        replaced: dict[str, Any] = await self._call(
            "update", "secrets", self.core.replace_namespaced_secret, name, namespace, body
        )
        return replaced

    async def patch_plugin_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            "patch",
            "lunaplugins/status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call("create", "events", self.core.create_namespaced_event, namespace, body)

    async def list_pod_metadata(
        self, namespace: str | None, token: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page (:attr:`pod_page` Pods) of Pods as metadata only (``PartialObjectMetadataList``:
        no spec, no status), of ``namespace`` or every namespace, and the next page's continue token."""
        paging: dict[str, Any] = {"limit": self.pod_page, "_headers": {"Accept": METADATA_LIST}}
        if token:
            paging["_continue"] = token
        if namespace is None:
            page = await self._call("list", "pods", self.core.list_pod_for_all_namespaces, **paging)
        else:
            page = await self._call("list", "pods", self.core.list_namespaced_pod, namespace, **paging)
        items = [item for item in page.get("items") or [] if isinstance(item, dict)]
        return items, (page.get("metadata") or {}).get("continue") or None

    async def list_namespace_names(self, label_selector: str) -> list[str]:
        """Names of the namespaces matching ``label_selector``."""
        found = await self._call(
            "list",
            "namespaces",
            self.core.list_namespace,
            label_selector=label_selector,
            _headers={"Accept": METADATA_LIST},
        )
        return sorted(str((item.get("metadata") or {}).get("name")) for item in found.get("items") or [])

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Pod, or None when there is none of that name."""
        try:
            found: dict[str, Any] = await self._call(
                "get", "pods", self.core.read_namespaced_pod, name, namespace
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def read_role_binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The RoleBinding, or None when there is none of that name."""
        try:
            found: dict[str, Any] = await self._call(
                "get", "rolebindings", self.rbac.read_namespaced_role_binding, name, namespace
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def read_cluster_role(self, name: str) -> dict[str, Any] | None:
        """The ClusterRole, or None when there is none of that name."""
        try:
            found: dict[str, Any] = await self._call("get", "clusterroles", self.rbac.read_cluster_role, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def create_role_binding(self, namespace: str, body: dict[str, Any]) -> None:
        await self._call("create", "rolebindings", self.rbac.create_namespaced_role_binding, namespace, body)

    async def patch_role_binding(self, namespace: str, name: str, operations: list[dict[str, Any]]) -> None:
        """Apply a JSON patch (``operations``: a ``test`` of the resourceVersion first, so a
        concurrent writer makes it fail with 422 instead of being overwritten)."""
        await self._call(
            "patch",
            "rolebindings",
            self.rbac.patch_namespaced_role_binding,
            name,
            namespace,
            operations,
            _content_type="application/json-patch+json",
        )


def _message(raw: bytes) -> str:
    """The API server's message from an error body (a Status object), else the raw text, short."""
    try:
        found = json.loads(raw)
        if isinstance(found, dict) and found.get("message"):
            return str(found["message"])[:1000]
    except ValueError:
        pass
    return raw[:300].decode(errors="replace")

"""A small in-memory API server for the operator's passes, and kopf-like indexes over it.

:class:`FakeCluster` implements :class:`luna_operator.cluster_api.ClusterApi` the way the API
server behaves for the calls a pass makes (resourceVersions, 404 on a missing object, 409 on a
create that exists or a replace of an older version, merge of a status patch) and records every
request. :meth:`FakeCluster.watch` hands the current objects to an
:class:`luna_operator.view.IndexView` through the real index functions, as kopf's watch would:
until it is called, the view lags behind the writes, as a real one can.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections import defaultdict
from typing import Any

from luna_operator.errors import ApiError
from luna_operator.records import PluginRecord
from luna_operator.secret_feed import SecretBook
from luna_operator.view import IndexView, index_config_maps, index_plugins

_uids = itertools.count(1)


class FakeCluster:
    """ConfigMaps, Secrets, LunaPlugins and Events of one in-memory cluster."""

    def __init__(self) -> None:
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.secret_book = SecretBook()
        """the labelled Secrets, as the operator's Secret watch would hold them after :meth:`watch`"""
        self.plugins: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, str]] = []
        """(verb, resource, name) of every call"""
        self.failures: dict[tuple[str, str], ApiError] = {}
        """(verb, name) -> the error that call gets (until removed)"""
        self._version = itertools.count(100)
        self.view = IndexView()
        self.watch()

    # --- test set-up ---------------------------------------------------------------------------

    def add_plugin(self, name: str, namespace: str = "ns", **spec: Any) -> dict[str, Any]:
        """Create (or update the spec of) a LunaPlugin; returns its body."""
        existing = self.plugins.get((namespace, name))
        if existing is not None:
            existing["spec"] = {"service": "handlers", **spec}
            existing["metadata"]["generation"] += 1
            return existing
        body = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}-{next(_uids)}",
                "generation": 1,
                "creationTimestamp": f"2026-01-01T00:00:{len(self.plugins):02d}Z",
                "resourceVersion": str(next(self._version)),
            },
            "spec": {"service": "handlers", **spec},
        }
        self.plugins[(namespace, name)] = body
        return body

    def delete_plugin(self, name: str, namespace: str = "ns") -> None:
        self.plugins.pop((namespace, name), None)

    def put_config_map(self, body: dict[str, Any], namespace: str = "ns") -> dict[str, Any]:
        """Store a ConfigMap as someone else would (no request recorded)."""
        stored = copy.deepcopy(body)
        stored.setdefault("metadata", {})["namespace"] = namespace
        stored["metadata"]["resourceVersion"] = str(next(self._version))
        stored["metadata"].setdefault("uid", f"cm-{next(_uids)}")
        self.config_maps[(namespace, stored["metadata"]["name"])] = stored
        return stored

    def put_secret(
        self, name: str, data: dict[str, str], *, offered: bool = True, namespace: str = "ns"
    ) -> None:
        """Store a Secret as a user would (``data`` in plain text; no request recorded)."""
        labels = {"luna.dev/plugin-settings": "true"} if offered else {}
        self.secrets[(namespace, name)] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "resourceVersion": str(next(self._version)),
                "uid": f"secret-{next(_uids)}",
            },
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }

    def secret_data(self, name: str, namespace: str = "ns") -> dict[str, bytes] | None:
        found = self.secrets.get((namespace, name))
        if found is None:
            return None
        return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}

    def watch(self) -> None:
        """Let the view see the cluster as it is now (what kopf's watch does, eventually)."""
        labelled = [
            copy.deepcopy(body)
            for body in self.secrets.values()
            if "luna.dev/plugin-settings" in (body["metadata"].get("labels") or {})
        ]
        self.secret_book.replace(None, labelled)
        plugins: dict[Any, list[Any]] = defaultdict(list)
        for body in self.plugins.values():
            for key, value in index_plugins(copy.deepcopy(body)).items():
                plugins[key].append(value)
        config_maps: dict[Any, list[Any]] = defaultdict(list)
        for body in self.config_maps.values():
            for key, value in index_config_maps(copy.deepcopy(body)).items():
                config_maps[key].append(value)
        self.view.bind(dict(plugins), dict(config_maps))

    def record(self, name: str, namespace: str = "ns") -> PluginRecord:
        return PluginRecord.from_body(self.plugins[(namespace, name)])

    def status(self, name: str, namespace: str = "ns") -> dict[str, Any]:
        return dict(self.plugins[(namespace, name)].get("status") or {})

    def data(self, name: str, namespace: str = "ns") -> dict[str, str] | None:
        found = self.config_maps.get((namespace, name))
        return None if found is None else dict(found.get("data") or {})

    def count(self, verb: str, resource: str = "configmaps") -> int:
        return sum(1 for v, r, _ in self.requests if (v, r) == (verb, resource))

    # --- ClusterApi ----------------------------------------------------------------------------

    def _call(self, verb: str, resource: str, name: str) -> None:
        self.requests.append((verb, resource, name))
        failure = self.failures.get((verb, name))
        if failure is not None:
            raise failure

    async def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._call("get", "configmaps", name)
        found = self.config_maps.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def _store(self, resource: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.config_maps if resource == "configmaps" else self.secrets

    def _create(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self._call("create", resource, name)
        store = self._store(resource)
        if (namespace, name) in store:
            raise ApiError(409, f'{resource} "{name}" already exists')
        stored = copy.deepcopy(body)
        stored["metadata"] |= {
            "namespace": namespace,
            "resourceVersion": str(next(self._version)),
            "uid": f"{resource}-{next(_uids)}",
        }
        store[(namespace, name)] = stored
        return copy.deepcopy(stored)

    def _replace(self, resource: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._call("update", resource, name)
        store = self._store(resource)
        current = store.get((namespace, name))
        if current is None:
            raise ApiError(404, f'{resource} "{name}" not found')
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "the object has been modified; please apply your changes to the latest version"
            )
        stored = copy.deepcopy(body)
        stored["metadata"] |= {
            "namespace": namespace,
            "resourceVersion": str(next(self._version)),
            "uid": current["metadata"]["uid"],
        }
        store[(namespace, name)] = stored
        return copy.deepcopy(stored)

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create("configmaps", namespace, body)

    async def replace_config_map(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._replace("configmaps", namespace, name, body)

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._create("secrets", namespace, body)

    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._replace("secrets", namespace, name, body)

    async def patch_plugin_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._call("patch", "lunaplugins/status", name)
        body = self.plugins.get((namespace, name))
        if body is None:
            raise ApiError(404, f'lunaplugins.luna.dev "{name}" not found')
        merged = dict(body.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        body["status"] = merged

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self._call("create", "events", body["involvedObject"]["name"])
        self.events.append(copy.deepcopy(body))

"""The operator's view of the LunaPlugins: filled by one LIST at start-up, then kept current
from kopf's watch events, so every reconcile sees every plugin of its service."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PluginRecord:
    """What the operator needs of one LunaPlugin."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    deleting: bool
    spec: Mapping[str, Any]
    status: Mapping[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return str(self.spec.get("service") or "handlers")

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def same_intent(self, other: PluginRecord) -> bool:
        """Whether ``other`` asks for exactly what this record asks for: only status or metadata
        (finalizers, annotations) differ, which changes nothing a reconcile derives."""
        return (
            self.uid == other.uid
            and self.generation == other.generation
            and self.deleting == other.deleting
            and self.created == other.created
            and self.spec == other.spec
        )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PluginRecord:
        meta = body.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            created=str(meta.get("creationTimestamp") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )


class PluginStore:
    """LunaPlugins by (namespace, name); ``put`` returns the services that need a reconcile.

    A change of status or metadata only (e.g. the operator's own status write coming back through
    the watch) needs none: the periodic resync still corrects anything else that drifts."""

    def __init__(self) -> None:
        self._plugins: dict[tuple[str, str], PluginRecord] = {}

    def put(self, record: PluginRecord) -> set[tuple[str, str]]:
        """Add or replace a plugin; returns its (namespace, service) and, if it moved, the old one;
        nothing when only its status or metadata changed."""
        previous = self._plugins.get(record.key)
        self._plugins[record.key] = record
        if previous is not None and previous.same_intent(record):
            return set()
        services = {(record.namespace, record.service)}
        if previous is not None:
            services.add((previous.namespace, previous.service))
        return services

    def remove(self, namespace: str, name: str) -> set[tuple[str, str]]:
        """Forget a deleted plugin; returns the service it belonged to."""
        previous = self._plugins.pop((namespace, name), None)
        return {(previous.namespace, previous.service)} if previous else set()

    def get(self, namespace: str, name: str) -> PluginRecord | None:
        return self._plugins.get((namespace, name))

    def of_service(self, namespace: str, service: str) -> list[PluginRecord]:
        """The service's plugins, oldest first (the oldest wins a module-name clash)."""
        found = [p for p in self._plugins.values() if p.namespace == namespace and p.service == service]
        return sorted(found, key=lambda p: (p.created, p.name))

    def services(self) -> set[tuple[str, str]]:
        return {(p.namespace, p.service) for p in self._plugins.values()}

    def referencing(self, namespace: str, config_map: str) -> set[tuple[str, str]]:
        """Services with a plugin whose ``codeFrom`` names this ConfigMap."""
        services = set()
        for plugin in self._plugins.values():
            ref = (plugin.spec.get("codeFrom") or {}).get("configMapKeyRef") or {}
            if plugin.namespace == namespace and ref.get("name") == config_map:
                services.add((plugin.namespace, plugin.service))
        return services

    def __len__(self) -> int:
        return len(self._plugins)

"""What the operator keeps of a LunaPlugin: :class:`PluginRecord`, made from the object's body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from luna_contract.names import ANNOTATION_ROLLOUT_COMMAND as ROLLOUT_COMMAND
from luna_contract.spec import SpecView


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
    rollout_command: str | None = None
    """the ``luna.dev/rollout-command`` annotation (a user's promote, abort or retry)"""

    @property
    def fields(self) -> SpecView:
        """The spec read with the contract's names and defaults."""
        return SpecView(self.spec)

    @property
    def service(self) -> str:
        return self.fields.service

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def same_intent(self, other: PluginRecord) -> bool:
        """Whether ``other`` asks for exactly what this record asks for: only status or metadata
        (finalizers, annotations other than a rollout command) differ, which changes nothing a
        reconcile derives."""
        return (
            self.uid == other.uid
            and self.generation == other.generation
            and self.deleting == other.deleting
            and self.created == other.created
            and self.spec == other.spec
            and self.rollout_command == other.rollout_command
        )

    def intent(self) -> tuple[object, ...]:
        """What the plugin asks for, comparable: equal intents differ only in status or metadata
        (finalizers, annotations other than a rollout command), which changes nothing a pass
        derives. Starts with the service."""
        return (
            self.service,
            self.uid,
            self.generation,
            self.deleting,
            self.created,
            self.spec,
            self.rollout_command,
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
            rollout_command=_command(meta.get("annotations")),
        )


def _command(annotations: object) -> str | None:
    value = annotations.get(ROLLOUT_COMMAND) if isinstance(annotations, Mapping) else None
    return value[:100] if isinstance(value, str) and value else None

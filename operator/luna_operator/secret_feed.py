"""The Secrets the operator may read: those labelled ``luna.dev/plugin-settings``.

One LIST+WATCH per scope with that label selector, so the API server sends the operator only
the Secrets offered to plugins (``luna.dev/plugin-settings: "true"``) and the services' settings
Secrets the operator writes itself (``luna.dev/plugin-settings: "service"``); no other Secret of
the cluster ever reaches it. kopf cannot select on the server side, hence
:class:`~luna_operator.list_watch.ListWatch`.

:class:`SecretBook` keeps them: offered Secrets decoded (their values are read by passes, never
logged), settings Secrets as the API returns them (data in base64). Every change is handed to
``on_change`` as (namespace, name, service), ``service`` set for a settings Secret; a change the
book already holds (the operator's own write coming back) is not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from luna_contract.names import LABEL_SERVICE
from luna_operator.list_watch import ListWatch
from luna_operator.secret_settings import OFFER_LABEL, OfferedSecret, offered_secret

#: the label value of the settings Secrets the operator writes (never offered to plugins)
SERVICE_SETTINGS = "service"
ObjectKey = tuple[str, str]
SecretChange = tuple[str, str, str | None]
"""(namespace, name, service): ``service`` is set when the Secret is a service's settings Secret"""


def _service_of(body: dict[str, Any]) -> str | None:
    labels = (body.get("metadata") or {}).get("labels") or {}
    if labels.get(OFFER_LABEL) != SERVICE_SETTINGS:
        return None
    service = labels.get(LABEL_SERVICE)
    return str(service) if service else None


def _version(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


class SecretBook:
    """Offered Secrets and settings Secrets by (namespace, name)."""

    def __init__(self) -> None:
        self._offered: dict[ObjectKey, tuple[str, OfferedSecret]] = {}
        self._settings: dict[ObjectKey, dict[str, Any]] = {}

    def offered(self, namespace: str) -> dict[str, OfferedSecret]:
        """The Secrets of ``namespace`` plugins may read, by name."""
        return {name: secret for (ns, name), (_, secret) in self._offered.items() if ns == namespace}

    def settings_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A settings Secret (as the API returned it), or None: there is none."""
        return self._settings.get((namespace, name))

    def put(self, body: dict[str, Any]) -> SecretChange | None:
        """Keep ``body``; returns the change, None when the book already held this version."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        service = _service_of(body)
        version = _version(body)
        if service is not None:
            held = self._settings.get(key)
            if held is not None and _version(held) == version:
                return None
            self._settings[key] = body
            self._offered.pop(key, None)
        else:
            secret = offered_secret(body)
            if not secret.offered:  # labelled, but not "true": not for plugins
                return self.remove(body)
            held_offered = self._offered.get(key)
            if held_offered is not None and held_offered[0] == version:
                return None
            self._offered[key] = (version, secret)
            self._settings.pop(key, None)
        return (key[0], key[1], service)

    def remove(self, body: dict[str, Any]) -> SecretChange | None:
        """Forget ``body``'s Secret; returns the change, None when it was not held."""
        meta = body.get("metadata") or {}
        return self._forget((str(meta.get("namespace") or ""), str(meta.get("name") or "")))

    def _forget(self, key: ObjectKey) -> SecretChange | None:
        settings = self._settings.pop(key, None)
        offered = self._offered.pop(key, None)
        if settings is None and offered is None:
            return None
        return (key[0], key[1], _service_of(settings) if settings is not None else None)

    def replace(self, namespace: str | None, items: list[dict[str, Any]]) -> list[SecretChange]:
        """Everything ``namespace`` (None: every namespace) holds now; returns what changed."""
        seen = {
            (str((item.get("metadata") or {}).get("namespace") or ""), str(item["metadata"]["name"]))
            for item in items
            if (item.get("metadata") or {}).get("name")
        }
        changes: list[SecretChange] = []
        for key in [*self._offered, *self._settings]:
            if (namespace is None or key[0] == namespace) and key not in seen:
                change = self._forget(key)
                if change is not None:
                    changes.append(change)
        for item in items:
            change = self.put(item)
            if change is not None:
                changes.append(change)
        return changes


class SecretFeed(ListWatch):
    """Follows the labelled Secrets of ``namespaces`` (empty: all) into ``book``."""

    what = "plugin-settings Secrets"

    def __init__(
        self,
        api: client.ApiClient,
        book: SecretBook,
        on_change: Callable[[SecretChange], None],
        *,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        super().__init__(namespaces=namespaces)
        self.core = client.CoreV1Api(api)
        self.book = book
        self.on_change = on_change

    def request(self, namespace: str | None, **params: Any) -> Any:
        if namespace is None:
            return self.core.list_secret_for_all_namespaces(
                label_selector=OFFER_LABEL, _preload_content=False, **params
            )
        return self.core.list_namespaced_secret(
            namespace, label_selector=OFFER_LABEL, _preload_content=False, **params
        )

    def listed(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        for change in self.book.replace(namespace, items):
            self.on_change(change)

    def changed(self, kind: str, item: dict[str, Any]) -> None:
        change = self.book.remove(item) if kind == "DELETED" else self.book.put(item)
        if change is not None:
            self.on_change(change)

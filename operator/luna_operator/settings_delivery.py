"""Settings from Secrets, for one pass: resolving ``spec.settingsFrom`` and writing the service's
settings Secret (see :mod:`luna_contract.secret_settings` for how the sidecar reads it).

What a pass may rely on:

- :meth:`SettingsDelivery.resolve` reads only the Secrets offered to plugins (the
  :class:`~luna_operator.secret_feed.SecretBook`: no API call); until the first LIST of them is
  done, every plugin with ``settingsFrom`` is *waiting* (transient), never "missing";
- :meth:`SettingsDelivery.write` makes the settings Secret hold, for each entry of the active
  list that names a ``secretSettingsHash``, exactly the bytes of that hash: the newly resolved
  values, or, for a plugin whose last good version keeps serving, what the Secret held for it.
  Keys no entry names are dropped (values of removed plugins do not linger). No Secret is
  created for a service that needs none.

Nothing here logs, raises or returns a value: messages name Secrets, keys and settings only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from luna_contract.secret_settings import settings_key, settings_secret_name, version_of
from luna_operator.cluster_api import ClusterApi
from luna_operator.desired import PluginOutcome
from luna_operator.errors import ApiError, describe, is_transient
from luna_operator.records import PluginRecord
from luna_operator.render import Owner, already_holds, settings_secret
from luna_operator.secret_feed import SecretBook
from luna_operator.secret_settings import Resolved, check_shape, resolve, secret_bytes

log = logging.getLogger("luna.operator")

NOT_LISTED_YET = "waiting for the Secrets offered to plugins to be listed"


class SettingsDelivery:
    """Resolves settings from Secrets and keeps each service's settings Secret."""

    def __init__(
        self,
        api: ClusterApi,
        book: SecretBook,
        known: Callable[[], bool] = lambda: True,
        *,
        blocked: set[tuple[str, str, str]] | None = None,
    ) -> None:
        self.api = api
        self.book = book
        self.known = known
        """whether the book holds every offered Secret (its first LIST is done)"""
        self.blocked = blocked if blocked is not None else set()
        """where settings Secrets that another object keeps the operator from writing are
        recorded, as (namespace, "Secret", name): the reconciler's set of blocked names"""

    def resolve(self, plugins: list[PluginRecord]) -> dict[str, Resolved]:
        """The resolution of each plugin's ``settingsFrom``, by plugin name; plugins without one,
        or whose ``settingsFrom`` is malformed (the decision says why), are left out."""
        resolved: dict[str, Resolved] = {}
        for plugin in plugins:
            settings_from = plugin.fields.settings_from
            if not settings_from or check_shape(settings_from, plugin.fields.settings):
                continue
            if not self.known():
                resolved[plugin.name] = Resolved(None, (NOT_LISTED_YET,), waiting=True, transient=True)
                continue
            settings = plugin.fields.settings
            resolved[plugin.name] = resolve(
                list(settings_from),
                settings if isinstance(settings, dict) else {},
                self.book.offered(plugin.namespace),
            )
        return resolved

    async def write(
        self,
        namespace: str,
        service: str,
        outcomes: list[PluginOutcome],
        resolved: Mapping[str, Resolved],
        owners: list[Owner],
    ) -> tuple[str, bool] | None:
        """Bring the service's settings Secret in line with ``outcomes``; returns (reason,
        transient) when it could not be written."""
        name = settings_secret_name(service)
        current = self.book.settings_secret(namespace, name)
        held = secret_bytes(current)
        values: dict[str, bytes] = {}
        for outcome in outcomes:
            entry = outcome.active
            if entry is None or entry.secret_settings_hash is None:
                continue
            fresh = resolved.get(outcome.plugin.name)
            encoded = fresh.encoded if fresh is not None else None
            if encoded is not None and version_of(encoded) == entry.secret_settings_hash:
                values[entry.module] = encoded
            else:
                kept = held.get(settings_key(entry.module))
                if kept is not None and version_of(kept) == entry.secret_settings_hash:
                    values[entry.module] = kept
        if current is None and not values:
            self.blocked.discard((namespace, "Secret", name))
            return None
        body = settings_secret(service, values, owners)
        if current is not None:
            if not owners:  # keep the owners it had (all gone now): the garbage collector deletes it
                body["metadata"]["ownerReferences"] = current["metadata"].get("ownerReferences") or []
            if already_holds(current, body):
                return None
            body["metadata"]["resourceVersion"] = str(current["metadata"].get("resourceVersion") or "")
        try:
            stored = await self._store(namespace, name, body, replace=current is not None)
        except ApiError as exc:
            reason = f"the settings Secret {name!r} could not be written: {describe(exc)}"
            if exc.status == 409 and current is None:
                # a Secret the operator did not write (its label missing) holds the name: tried
                # again with backoff, so the service recovers once it is removed
                reason += " (a Secret of that name that the operator did not write: delete or rename it)"
                self.blocked.add((namespace, "Secret", name))
            log.warning("%s/%s: %s", namespace, service, reason)
            return reason, is_transient(exc)
        self.blocked.discard((namespace, "Secret", name))
        self.book.put(stored)
        log.info(
            "settings Secret of %s/%s: %d plugin(s): %s",
            namespace,
            service,
            len(values),
            ", ".join(sorted(values)) or "none",
        )
        return None

    async def _store(
        self, namespace: str, name: str, body: dict[str, Any], *, replace: bool
    ) -> dict[str, Any]:
        if not replace:
            return await self.api.create_secret(namespace, body)
        try:
            return await self.api.replace_secret(namespace, name, body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            del body["metadata"]["resourceVersion"]  # gone meanwhile: create it again
            return await self.api.create_secret(namespace, body)

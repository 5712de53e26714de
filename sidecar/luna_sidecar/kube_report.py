"""The per-pod report: a ``LunaPluginRuntime`` object saying which module and code hash this
sidecar runs, with what state or error. Written on every change and every heartbeat, owned by
the Pod (so Kubernetes deletes it with the Pod) and deleted on a clean shutdown. The operator
reads these to fill each LunaPlugin's ``status.loaded``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "luna.dev", "v1alpha1", "lunapluginruntimes"


def report_name(pod: str, service: str) -> str:
    """``<pod>-<service>``, trimmed to a valid object name."""
    return f"{pod}-{service}"[:253].rstrip("-.")


class RuntimeReporter:
    """Upserts this sidecar's report; ``poke`` asks for an early refresh."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        service: str,
        pod: str,
        pod_uid: str | None,
        plugins: Callable[[], list[dict[str, Any]]],
        ready: Callable[[], bool],
        interval: float = 10.0,
        problems: Callable[[], list[str]] = list,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.service = service
        self.pod = pod
        self.pod_uid = pod_uid
        self.name = report_name(pod, service)
        self._plugins = plugins
        self._ready = ready
        self._problems = problems
        self.interval = interval
        self._poked = asyncio.Event()
        self.reports = 0

    def poke(self) -> None:
        self._poked.set()

    def body(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "labels": {
                "luna.dev/service": self.service,
                "app.kubernetes.io/managed-by": "luna-plugins-sidecar",
            },
        }
        if self.pod_uid:
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": self.pod, "uid": self.pod_uid}
            ]
        plugins = [
            {
                key: value
                for key, value in {
                    "module": plugin["name"],
                    "state": plugin["state"],
                    "codeHash": plugin.get("codeHash"),
                    "failedCodeHash": plugin.get("failedCodeHash"),
                    "error": plugin.get("error"),
                    # which plugin blocks the event loop, for kubectl get lpr -o yaml
                    "loopBlockedSeconds": plugin.get("loopBlockedSeconds") or None,
                    # its packages: installing, installed or failed (absent without requirements)
                    "requirements": (plugin.get("requirements") or {}).get("state"),
                }.items()
                if value is not None
            }
            for plugin in self._plugins()
        ]
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LunaPluginRuntime",
            "metadata": metadata,
            "spec": {
                "service": self.service,
                "pod": self.pod,
                "ready": self._ready(),
                "heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "plugins": plugins,
                # always written, so a merge patch also clears problems that went away
                "problems": self._problems(),
            },
        }

    async def report(self) -> None:
        """Write the report now (create, or replace the spec)."""
        body = self.body()
        try:
            await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                {"spec": body["spec"]},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        self.reports += 1

    async def run(self) -> None:
        """Report on every poke and every ``interval`` seconds; API trouble is retried."""
        while True:
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not write the runtime report %s: %s", self.name, exc)
            try:
                await asyncio.wait_for(self._poked.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            self._poked.clear()

    async def withdraw(self) -> None:
        """Delete the report (clean shutdown): this pod stops counting at once."""
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete the runtime report %s: %s", self.name, exc.reason)
        except Exception as exc:
            log.warning("could not delete the runtime report %s: %s", self.name, exc)

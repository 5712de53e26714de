"""JSON GETs and POSTs against the API server of a kubeconfig context (or the pod's own account).

:func:`connect` reads the kubeconfig as kubectl does (``--kubeconfig``, else ``$KUBECONFIG``, else
``~/.kube/config``; in a pod without any of them, the pod's ServiceAccount). Every request
answers a :class:`Reply`, never raises: a request that got no answer has ``status`` None and the
client's error as its message, so each check can say what it could not read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

#: seconds one request may take
REQUEST_TIMEOUT = 15.0


class KubeconfigError(Exception):
    """The kubeconfig could not be read or names no usable context; the message says which."""


@dataclass(frozen=True)
class Reply:
    """The API server's answer to one request."""

    status: int | None
    """the HTTP status; None when no answer came (the message says why)"""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 299

    @property
    def message(self) -> str:
        """The API server's message (a Status' ``message``), or what kept the request from an answer."""
        return str(self.body.get("message") or self.body.get("reason") or f"HTTP {self.status}")


class Kube:
    """Raw JSON requests through one kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api: client.ApiClient, *, namespace: str, server: str) -> None:
        self.api = api
        self.namespace = namespace
        """the context's namespace (``default`` when it names none)"""
        self.server = server

    async def get(self, path: str, **query: str) -> Reply:
        return await self._call("GET", path, query, None)

    async def post(self, path: str, body: dict[str, Any], **query: str) -> Reply:
        return await self._call("POST", path, query, body)

    async def merge_patch(self, path: str, body: dict[str, Any]) -> Reply:
        """A JSON merge patch of the object at ``path``."""
        return await self._call("PATCH", path, {}, body, content_type="application/merge-patch+json")

    async def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        *,
        content_type: str = "application/json",
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self.api.call_api(
                path,
                method,
                query_params=list(query.items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            try:
                raw = await response.read()
                status = int(response.status)
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Reply(None, {"message": f"{type(exc).__name__}: {exc}"})
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw[:300].decode(errors="replace")}
        return Reply(status, decoded if isinstance(decoded, dict) else {"message": str(decoded)[:300]})

    async def close(self) -> None:
        await self.api.close()


def _in_a_pod(kubeconfig: str | None) -> bool:
    """No kubeconfig anywhere, but a ServiceAccount token: use the pod's own account."""
    return (
        kubeconfig is None
        and not os.environ.get("KUBECONFIG")
        and not (Path.home() / ".kube" / "config").exists()
        and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


def _pod_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else "default"


def _context(kubeconfig: str | None, context: str | None) -> tuple[str, dict[str, Any]]:
    """(the kubeconfig path, the chosen context's entry); raises :class:`KubeconfigError`."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not any(Path(part).is_file() for part in path.split(os.pathsep) if part):
        raise KubeconfigError(f"there is no kubeconfig file {path}: pass --kubeconfig FILE or set KUBECONFIG")
    try:
        contexts, current = config.list_kube_config_contexts(path)
    except (config.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise KubeconfigError(f"cannot read the kubeconfig {path}: {exc}") from None
    chosen = current if context is None else next((c for c in contexts if c["name"] == context), None)
    if not isinstance(chosen, dict):
        names = ", ".join(str(c["name"]) for c in contexts) or "none"
        wanted = f"no context {context!r}" if context else "no current context"
        raise KubeconfigError(f"the kubeconfig {path} has {wanted} (it has: {names}); pass --context NAME")
    return path, chosen


async def connect(kubeconfig: str | None, context: str | None) -> Kube:
    """A :class:`Kube` for ``context`` of ``kubeconfig`` (both None: the current context of the
    default kubeconfig); raises :class:`KubeconfigError` with what to pass instead."""
    configuration = client.Configuration()
    if _in_a_pod(kubeconfig) and context is None:
        config.load_incluster_config(client_configuration=configuration)
        namespace = _pod_namespace()
    else:
        path, chosen = _context(kubeconfig, context)
        try:
            await config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration
            )
        except (config.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            raise KubeconfigError(
                f"cannot use context {chosen['name']!r} of the kubeconfig {path}: {exc}"
            ) from None
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Kube(client.ApiClient(configuration), namespace=namespace, server=str(configuration.host))

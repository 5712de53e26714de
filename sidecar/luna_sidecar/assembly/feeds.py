"""Where the sidecar's desired plugins come from: a directory (standalone) or the cluster.

A feed offers ``sync()`` (the first complete state, applied), ``runners()`` (the tasks that
follow changes, each meant to run forever; the server supervises them), ``request_reload()``
(SIGHUP), ``live()`` (for /healthz), ``problems()`` (bad input it is ignoring) and ``close()``.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from luna_contract.names import LABEL_SERVICE
from luna_sidecar.config import SidecarConfig
from luna_sidecar.desired import DesiredPlugin, DirectorySource, DirectoryWatcher
from luna_sidecar.engine import Runtime

if TYPE_CHECKING:  # kubernetes_asyncio is imported only in cluster mode
    from kubernetes_asyncio.client import ApiClient

    from luna_sidecar.kube import ClusterWatcher, RuntimeReporter


Runner = Callable[[], Coroutine[Any, Any, None]]


class Feed(Protocol):
    async def sync(self) -> bool: ...

    def runners(self) -> dict[str, Runner]: ...

    def problems(self) -> list[str]: ...

    def request_reload(self) -> None: ...

    def live(self) -> tuple[bool, str]: ...

    async def close(self) -> None: ...


class StartupError(RuntimeError):
    """The sidecar cannot start; the message says what to change."""


def _applier(runtime: Runtime):  # type: ignore[no-untyped-def]
    async def apply(desired: list[DesiredPlugin], retry_failed: bool) -> None:
        await runtime.apply(desired, retry_failed=retry_failed)

    return apply


class DirectoryFeed:
    """Standalone mode: ``--plugins-dir`` and an active list."""

    def __init__(self, config: SidecarConfig, runtime: Runtime) -> None:
        if config.plugins_dir is None:
            raise StartupError(
                "no plugin source: give --plugins-dir DIR (standalone) or --namespace NS (cluster mode)"
            )
        if not config.plugins_dir.is_dir():
            raise StartupError(f"--plugins-dir {config.plugins_dir}: no such directory")
        plugins_dir = str(config.plugins_dir.resolve())
        if plugins_dir not in sys.path:
            sys.path.append(plugins_dir)  # helper modules beside the plugins are importable
        source = DirectorySource(
            config.plugins_dir,
            active=config.active,
            active_file=config.active_file,
            isolated=frozenset(config.isolate),
        )
        self.watcher = DirectoryWatcher(
            source, _applier(runtime), poll_interval=config.poll_interval, debounce=config.reload_debounce
        )

    async def sync(self) -> bool:
        return await self.watcher.sync()

    def runners(self) -> dict[str, Runner]:
        return {"luna-feed-directory": self.watcher.run}

    def problems(self) -> list[str]:
        return self.watcher.problems()

    def request_reload(self) -> None:
        self.watcher.request_reload()

    def live(self) -> tuple[bool, str]:
        return True, "ok"

    async def close(self) -> None:
        """Nothing to release."""


class ClusterFeed:
    """Cluster mode: the service's ConfigMaps from the API, and the per-pod report."""

    def __init__(self, config: SidecarConfig, runtime: Runtime, ready: object) -> None:
        assert config.namespace is not None
        self.config = config
        self.runtime = runtime
        self._ready = ready
        self.api: ApiClient | None = None
        self.watcher: ClusterWatcher | None = None
        self.reporter: RuntimeReporter | None = None

    async def connect(self) -> None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio import config as kube_config

        from luna_sidecar.desired import SecretSettingsDir
        from luna_sidecar.kube import ClusterWatcher, ConfigMapMirror, RuntimeReporter

        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            try:
                await kube_config.load_kube_config()
            except Exception as exc:
                raise StartupError(f"--namespace given but no Kubernetes credentials found: {exc}") from None
        api = client.ApiClient()
        namespace, service = self.config.namespace, self.config.service
        assert namespace is not None
        self.api = api
        pod = self.config.pod_name or socket.gethostname()
        reporter = RuntimeReporter(
            api,
            namespace=namespace,
            service=service,
            pod=pod,
            pod_uid=self.config.pod_uid,
            plugins=self.runtime.describe,
            ready=lambda: bool(getattr(self._ready, "ready", False)),
            interval=self.config.heartbeat_interval,
            problems=self.problems,
            code_hashes=lambda: self.watcher.code_hashes if self.watcher is not None else None,
            rollouts=lambda: self.watcher.rollouts if self.watcher is not None else frozenset(),
        )
        self.reporter = reporter
        self.runtime.on_change.append(reporter.poke)
        self.watcher = ClusterWatcher(
            lambda changed: ConfigMapMirror(api, namespace, f"{LABEL_SERVICE}={service}", changed),
            service,
            _applier(self.runtime),
            self.runtime.current_source,
            on_applied=reporter.poke,
            secrets=SecretSettingsDir(self.config.secret_settings_dir),
            pod=pod,
        )

    async def sync(self) -> bool:
        if self.watcher is None:
            await self.connect()
        assert self.watcher is not None
        return await self.watcher.sync()

    def runners(self) -> dict[str, Runner]:
        assert self.watcher is not None and self.reporter is not None
        return {"luna-feed-configmaps": self.watcher.run, "luna-feed-report": self.reporter.run}

    def problems(self) -> list[str]:
        return self.watcher.problems() if self.watcher is not None else []

    def request_reload(self) -> None:
        if self.watcher is not None:
            self.watcher.request_reload()

    def live(self) -> tuple[bool, str]:
        if self.watcher is None:
            return True, "starting"
        silent = time.monotonic() - self.watcher.mirror.last_contact
        if silent > self.config.api_timeout:
            return (
                False,
                f"Kubernetes API unreachable for {silent:.0f} s (limit {self.config.api_timeout:g} s)",
            )
        return True, "ok"

    async def close(self) -> None:
        if self.reporter is not None:
            await self.reporter.withdraw()
        if self.api is not None:
            await self.api.close()

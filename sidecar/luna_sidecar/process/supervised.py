"""One isolated plugin version: its process, restarted with backoff when it dies, quarantined
when it keeps dying, and the stand-ins the runtime drives as if the plugin ran in-process.

:meth:`IsolatedPlugin.load` starts the first process and returns the stand-ins
(:class:`ProcessEventPlugin` subclasses named after the plugin's event classes, one
:class:`ProcessBackgroundPlugin` per background class, whose routes forward to the process).
The runtime's queues, timeouts, routes, metrics and delivery policies apply to them unchanged.
While the process is down, event queues wait (:meth:`IsolatedPlugin.wait_available`: bounded
and counted by the queues as always) and routes answer 503 with a JSON body.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from multidict import CIMultiDict

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseBackgroundPlugin, BaseEventPlugin, BasePlugin
from luna_plugins.delivery import delivery_context
from luna_plugins.http import PluginRequest, PluginResponse
from luna_plugins.monitoring import MonitoringPoint
from luna_plugins.routes import RouteSpec
from luna_sidecar.process.child_process import ChildGoneError, ChildLoadError, ExitInfo, PluginProcess
from luna_sidecar.process.confine import unprivileged_user
from luna_sidecar.process.limits import ProcessLimits
from luna_sidecar.process.metrics import ProcessMetrics
from luna_sidecar.process.protocol import Answer, Done, MoreRoutes, Ready, RouteInfo, encode_points

__all__ = [
    "IsolatedCallError",
    "IsolatedPlugin",
    "IsolationSettings",
    "ProcessBackgroundPlugin",
    "ProcessEventPlugin",
    "ProcessStandIn",
]

log = logging.getLogger(__name__)


#: numbers the isolated plugin versions of this process (their users, when it runs as root)
_SERIALS = itertools.count()


class IsolatedCallError(Exception):
    """The plugin failed the call in its process; the message is what it raised there, and
    ``retry_after`` what a ``RetryLater`` (or any exception with that attribute) asked for."""

    retry_after: float | None = None


@dataclass(frozen=True)
class IsolationSettings:
    """What every isolated plugin of a sidecar shares."""

    limits: ProcessLimits
    service: str
    callback_timeout: float
    route_timeout: float
    lifecycle_timeout: float
    hidden: tuple[str, ...] = ()
    """folders the processes must not read although they are on ``sys.path`` (the plugins'
    folder, whose settings files belong to every plugin)"""
    read_only: tuple[str, ...] = ()
    """folders and files every process may read besides the Python installation"""


#: what a process may read besides the Python installation and sys.path (system libraries,
#: certificates, name resolution); nothing of the sidecar's own
SYSTEM_READ_ONLY = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/dev/urandom", "/dev/random", "/dev/zero")


class ProcessStandIn:
    """What the stand-ins share: the supervisor of their plugin's process."""

    supervisor: IsolatedPlugin
    index: int

    async def close(self) -> None:
        await self.supervisor.close()


class ProcessEventPlugin(ProcessStandIn, BaseEventPlugin):
    """Stands in for an event plugin class running in the plugin's process."""

    eventName: ClassVar[str] = ""  # noqa: N815 - the SDK's name

    async def handleEvent(self, *args: Any, **kwargs: Any) -> None:  # noqa: N802 - the SDK's name
        await self.supervisor.deliver(self.index, args[:-1])  # the last is the sidecar's logger


class ProcessBackgroundPlugin(ProcessStandIn, BaseBackgroundPlugin):
    """Stands in for a background plugin class running in the plugin's process."""


class IsolatedPlugin:
    """The process of one isolated plugin version, supervised."""

    def __init__(
        self,
        *,
        module: str,
        code: bytes,
        origin: str,
        code_hash: str,
        settings: Any,
        app: LunaApplication,
        isolation: IsolationSettings,
        metrics: ProcessMetrics,
        logger: logging.Logger,
        on_quarantine: Callable[[str, str], None],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.module = module
        self.code_hash = code_hash
        self.app = app
        self.isolation = isolation
        self.limits = isolation.limits
        self.metrics = metrics
        self.logger = logger
        self.on_quarantine = on_quarantine
        #: called when the process's state changes (the per-pod report is refreshed)
        self.on_change = on_change
        self.workdir = tempfile.mkdtemp(prefix=f"luna-isolated-{module}-")
        os.chmod(self.workdir, 0o700)
        self.user: int | None = None
        if os.getuid() == 0:  # its process runs as a user of its own (see confine)
            self.user = unprivileged_user(os.getpid(), next(_SERIALS))
            os.chown(self.workdir, self.user, self.user)
        self.state = "loading"
        self.restarts = 0
        self.start_seconds = 0.0
        """how long the last process took from its start to the plugin loaded"""
        self.confinement = ""
        self.last_exit: ExitInfo | None = None
        self.stand_ins: list[BasePlugin] = []
        self._start = self._start_message(code, origin, settings)
        self._process: PluginProcess | None = None
        self._crashes: collections.deque[float] = collections.deque()
        self._changed = asyncio.Event()
        self._restart_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._route_index: dict[tuple[int, str, tuple[str, ...]], int] = {}
        self._known_routes: set[tuple[int, str, tuple[str, ...]]] = set()
        self._quarantine_reason: str | None = None

    def _start_message(self, code: bytes, origin: str, settings: Any) -> dict[str, Any]:
        hidden = {os.path.realpath(path) for path in self.isolation.hidden}
        sys_path = [entry for entry in sys.path if os.path.realpath(entry) not in hidden]
        read_only = _python_paths(sys_path) + list(SYSTEM_READ_ONLY) + list(self.isolation.read_only)
        return {
            "module": self.module,
            "code": code,
            "origin": origin,
            "code_hash": self.code_hash,
            "settings": dict(settings),
            "service": self.isolation.service,
            "config": dict(self.app.config),
            "sys_path": sys_path,
            "read_only": [path for path in read_only if os.path.realpath(path) not in hidden],
            "read_write": [self.workdir, "/dev/null"],
            "workdir": self.workdir,
            "user": self.user,
            "parent": os.getpid(),
            "limits": {name: getattr(self.limits, name) for name in self.limits.__dataclass_fields__},
            "callback_timeout": self.isolation.callback_timeout,
            "route_timeout": self.isolation.route_timeout,
            "lifecycle_timeout": self.isolation.lifecycle_timeout,
            "log_level": logging.getLogger().getEffectiveLevel(),
        }

    # --- state ---------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether calls go through now (the process runs and is loaded)."""
        return self.state == "running"

    def _set_state(self, state: str) -> None:
        self.state = state
        if state != "closed":  # a closed version's gauges are released, or a newer one's
            self.metrics.up.labels(self.module).set(1 if state == "running" else 0)
        if self.on_change is not None and state in ("running", "restarting", "quarantined"):
            self.on_change()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_available(self) -> None:
        """Return once calls go through; raises :class:`ChildGoneError` when they never will
        again (the plugin was quarantined or closed)."""
        while self.state != "running":
            if self.state in ("quarantined", "closed"):
                raise ChildGoneError(self._quarantine_reason or "the plugin's process was closed")
            await self._changed.wait()

    def describe(self) -> dict[str, Any]:
        """The process as ``GET /plugins`` shows it."""
        process = self._process
        last = self.last_exit
        return {
            "state": self.state,
            "pid": process.pid if process is not None and process.alive else None,
            "restarts": self.restarts,
            "startSeconds": round(self.start_seconds, 3),
            "rssBytes": process.rss_bytes if process is not None and process.alive else 0,
            "cpuSeconds": round(process.cpu_seconds, 3) if process is not None else 0.0,
            "confinement": self.confinement,
            "lastExit": None if last is None else {"reason": last.reason, "output": list(last.tail)},
            "limits": {
                "memoryBytes": self.limits.memory_bytes,
                "stallSeconds": self.limits.stall_seconds,
                "openFiles": self.limits.open_files,
                "processes": self.limits.processes,
            },
        }

    def sample(self) -> tuple[int, float]:
        """(resident bytes, CPU seconds) of the running process (zeros when none runs)."""
        process = self._process
        if process is None or not process.alive:
            return 0, process.cpu_seconds if process is not None else 0.0
        return process.rss_bytes, process.cpu_seconds

    # --- loading -------------------------------------------------------------------------------

    async def load(self) -> list[BasePlugin]:
        """Start the first process and build the stand-ins; raises :class:`ChildLoadError`."""
        process = self._new_process()
        began = time.monotonic()
        try:
            ready = await process.start(self._start, self.isolation.lifecycle_timeout * 3)
        except BaseException:
            self.state = "closed"
            await self._discard(process)
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.start_seconds = time.monotonic() - began
        self._adopt(process, ready)
        self.metrics.claim(self.module, self)
        self.stand_ins = self._make_stand_ins(ready)
        for info in ready.routes:
            self._add_route(info)
        self._set_state("running")
        return self.stand_ins

    def _new_process(self) -> PluginProcess:
        process = PluginProcess(
            self.module,
            limits=self.limits,
            workdir=self.workdir,
            logger=self.logger,
            on_exit=lambda info: self._exited(process, info),
            on_routes=lambda message: self._more_routes(process, message),
            on_sample=self._sampled,
        )
        return process

    def _adopt(self, process: PluginProcess, ready: Ready) -> None:
        self._process = process
        self.confinement = ready.confinement
        self._route_index = {
            (info.owner, info.path, tuple(info.methods)): index for index, info in enumerate(ready.routes)
        }
        if not ready.confinement.startswith("landlock") and "; landlock" not in ready.confinement:
            self.logger.warning(
                "plugin %s: its process could not confine its files (%s): it can read what the sidecar reads",
                self.module,
                ready.confinement,
            )

    def _make_stand_ins(self, ready: Ready) -> list[BasePlugin]:
        stand_ins: list[BasePlugin] = []
        for index, info in enumerate(ready.classes):
            base: type[ProcessEventPlugin] | type[ProcessBackgroundPlugin]
            if info.kind == "event":
                base = ProcessEventPlugin
                attributes: dict[str, Any] = {"eventName": info.event_name}
            else:
                base = ProcessBackgroundPlugin
                attributes = {}
            cls = type(info.name, (base,), attributes | {"__module__": self.module})
            instance = cls(self.app)
            instance.supervisor = self
            instance.index = index
            stand_ins.append(instance)
        return stand_ins

    def _more_routes(self, process: PluginProcess, message: MoreRoutes) -> None:
        if process is not self._process:
            return
        for info in message.routes:
            key = (info.owner, info.path, tuple(info.methods))
            self._route_index.setdefault(key, len(self._route_index))
            self._add_route(info)

    def _add_route(self, info: RouteInfo) -> None:
        key = (info.owner, info.path, tuple(info.methods))
        if key in self._known_routes or not 0 <= info.owner < len(self.stand_ins):
            return
        owner = self.stand_ins[info.owner]
        self._known_routes.add(key)
        spec = RouteSpec(
            path=info.path, methods=frozenset(info.methods), endpoint=self._endpoint(key), plugin=owner
        )
        try:
            self.app.router.add(spec)
        except ValueError as exc:
            self.logger.error("plugin %s: route %s refused: %s", self.module, info.path, exc)

    def _sampled(self, rss: int, cpu: float) -> None:
        if self.state not in ("closed", "loading"):
            self.metrics.rss.labels(self.module).set(rss)
            self.metrics.cpu.labels(self.module).set(cpu)

    # --- calls ---------------------------------------------------------------------------------

    async def deliver(self, index: int, payload: tuple[Any, ...]) -> None:
        """One event call in the process; raises :class:`IsolatedCallError` with what the
        plugin raised there, or :class:`ChildGoneError` when the process ended first."""
        await self.wait_available()
        process = self._process
        assert process is not None
        started = time.perf_counter()
        first = payload[0] if len(payload) == 1 else None
        delivery = delivery_context()  # the batch's identity and attempt, under at-least-once
        if isinstance(first, list) and all(point.__class__ is MonitoringPoint for point in first):
            done: Done = await process.call("points", index, encode_points(first), delivery)
        else:
            done = await process.call("event", index, payload, delivery)
        self.metrics.crossing.labels(self.module, "event").observe(
            max(0.0, time.perf_counter() - started - done.elapsed)
        )
        if done.error is not None:
            failure = IsolatedCallError(done.error)
            if done.retry_after is not None and math.isfinite(done.retry_after) and done.retry_after >= 0:
                failure.retry_after = done.retry_after  # honoured as RetryLater's
            raise failure

    def _endpoint(self, key: tuple[int, str, tuple[str, ...]]) -> Callable[[PluginRequest], Any]:
        async def forward(request: PluginRequest) -> web.StreamResponse:
            process = self._process
            index = self._route_index.get(key)
            if not self.available or process is None or index is None:
                return self._unavailable()
            raw = request.raw
            remote = getattr(raw, "remote", None)
            raw_headers = getattr(raw, "raw_headers", None)
            if not isinstance(raw_headers, list):
                raw_headers = [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in request.headers.items()
                ]
            started = time.perf_counter()
            try:
                answer: Answer = await process.call(
                    "route",
                    index,
                    request.method,
                    request.path,
                    request.query_string,
                    raw_headers,
                    bytes(request.body),
                    request.match_info,
                    remote if isinstance(remote, str) else None,
                )
            except ChildGoneError:
                return self._unavailable()
            self.metrics.crossing.labels(self.module, "route").observe(
                max(0.0, time.perf_counter() - started - answer.elapsed)
            )
            if answer.status == 0:
                raise IsolatedCallError(answer.body.decode("utf-8", errors="replace"))
            return _response(answer)

        return forward

    def _unavailable(self) -> web.Response:
        last = self.last_exit
        why = f" (its process ended: {last.reason})" if last is not None else ""
        if self.state == "quarantined":
            message = f"plugin {self.module!r} is quarantined{why}"
        else:
            message = f"plugin {self.module!r} is restarting{why}; retry shortly"
        return web.Response(
            status=503,
            text=json.dumps({"error": message, "plugin": self.module, "state": self.state}),
            content_type="application/json",
            headers={"Retry-After": "1"},
        )

    # --- crashes and restarts ------------------------------------------------------------------

    def _exited(self, process: PluginProcess, info: ExitInfo) -> None:
        if process is not self._process or self.state in ("closed", "loading") or info.expected:
            return
        self.last_exit = info
        self.metrics.exits.labels(self.module, info.kind).inc()
        tail = " | ".join(line for line in list(info.tail)[-5:] if line)
        self.logger.error(
            "plugin %s: its process ended: %s%s",
            self.module,
            info.reason,
            f"; last output: {tail}" if tail else "",
        )
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - self.limits.crash_window:
            self._crashes.popleft()
        if len(self._crashes) >= self.limits.crash_limit:
            self._quarantine_reason = (
                f"quarantined: its process ended {len(self._crashes)} times within "
                f"{self.limits.crash_window:g} s (last: {info.reason})"
                + (f"; last output: {tail}" if tail else "")
                + "; fix the code, or send SIGHUP to retry"
            )
            self._set_state("quarantined")
            self.on_quarantine(self.module, self._quarantine_reason)
            return
        delay = min(self.limits.restart_delay_max, self.limits.restart_delay * 2 ** (len(self._crashes) - 1))
        self._set_state("restarting")
        self._restart_task = asyncio.create_task(
            self._restart(delay), name=f"luna-isolated-{self.module}-restart"
        )

    async def _restart(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.state != "restarting":
            return
        process = self._new_process()
        self._process = process
        began = time.monotonic()
        try:
            ready = await process.start(self._start, self.isolation.lifecycle_timeout * 3)
        except ChildLoadError as exc:
            # its end is counted by _exited (a load that failed ends the process too)
            self.logger.error("plugin %s: restart failed: %s", self.module, exc)
            if process.alive:
                process.kill(f"restart failed: {exc}", "load_failed")
            return
        except Exception as exc:  # it could not even be started (no memory, no pids): an end too
            if process.pid is None:
                self._exited(process, ExitInfo(f"could not start: {exc}", "start_failed", (), False))
            elif process.alive:
                process.kill(f"restart failed: {exc}", "start_failed")
            return
        if self.state != "restarting":
            await process.close(self.isolation.lifecycle_timeout)
            return
        self.start_seconds = time.monotonic() - began
        self._adopt(process, ready)
        self.restarts += 1
        self.metrics.restarts.labels(self.module).inc()
        for info in ready.routes:
            self._add_route(info)
        self._set_state("running")
        self.logger.info("plugin %s: its process runs again (restart %d)", self.module, self.restarts)

    # --- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """End the process after the plugin's ``close()`` (bounded); idempotent, and every
        stand-in's ``close()`` lands here."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._set_state("closed")
        if self._restart_task is not None:
            self._restart_task.cancel()
        process = self._process
        if process is not None:
            await self._discard(process)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.metrics.release(self.module, self)

    async def _discard(self, process: PluginProcess) -> None:
        if process.alive:
            await process.close(self.isolation.lifecycle_timeout + 1)


def _response(answer: Answer) -> web.StreamResponse:
    """The child's answer as the response the route table sends; what a hostile child could
    smuggle (a status outside HTTP's, CR or LF in a header) raises, and the client gets 500."""
    if not 100 <= answer.status <= 599:
        raise IsolatedCallError(f"the plugin's process answered status {answer.status}")
    headers = dict(answer.headers)
    if len(headers) == len(answer.headers):  # as pluginHTTPResponse builds it: its checks, its fast path
        return PluginResponse(answer.status, answer.body, headers)
    for name, value in answer.headers:  # a header given twice (cookies): checked here
        if any(char in name or char in value for char in "\r\n"):
            raise ValueError("a response header name or value holds CR or LF")
    return web.Response(status=answer.status, body=answer.body, headers=CIMultiDict(answer.headers))


def _python_paths(sys_path: list[str]) -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(entry for entry in sys_path if entry and os.path.isdir(entry))
    for package in ("luna_plugins", "luna_sidecar", "luna_contract"):
        module = __import__(package)
        if module.__file__:
            paths.add(os.path.dirname(os.path.dirname(module.__file__)))
    return sorted(paths)

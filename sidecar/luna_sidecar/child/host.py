"""The isolated plugin's side: load the plugin, then answer the sidecar's calls.

Calls run concurrently, each in a task of its own: an event callback under the callback
timeout, a route handler under the route timeout. What plugin code raises is reported back as
that call's failure; a ``MemoryError`` ends the process (exit :data:`EXIT_MEMORY`), as the
sidecar would end it once its resident memory passed the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import pickle
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from luna_plugins.application import LunaApplication
from luna_plugins.base.plugins_meta.base_plugins import BaseEventPlugin, BasePlugin
from luna_plugins.delivery import DeliveryInfo, _enter, _leave
from luna_plugins.http import PluginRequest
from luna_plugins.routes import RouteCollector, RouteSpec
from luna_sidecar.child.requests import ForwardedRequest, response_parts
from luna_sidecar.desired import PluginSource
from luna_sidecar.engine.lifecycle import close_instances, load_version, plugin_logger
from luna_sidecar.engine.loader import PluginLoadError, describe_exception
from luna_sidecar.isolation import Leftovers
from luna_sidecar.process.confine import confine
from luna_sidecar.process.limits import ProcessLimits
from luna_sidecar.process.protocol import (
    Answer,
    ChildMessage,
    ClassInfo,
    Done,
    FrameProtocol,
    LoadFailed,
    MoreRoutes,
    Pong,
    Ready,
    RouteInfo,
    decode_points,
    encode_child,
)

__all__ = ["EXIT_MEMORY", "main"]

#: exit code of a process whose plugin ran out of its memory limit
EXIT_MEMORY = 86


class _LineFormatter(logging.Formatter):
    """One JSON object per line (level, logger, message with its traceback): the sidecar
    re-logs it under the plugin's logger."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps({"level": record.levelname, "logger": record.name, "message": message})


def _read_start(sock: socket.socket) -> dict[str, Any]:
    head = _read_exactly(sock, 4)
    (length,) = struct.unpack(">I", head)
    start: dict[str, Any] = pickle.loads(_read_exactly(sock, length))
    return start


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SystemExit("the sidecar closed the connection before the plugin was sent")
        data += chunk
    return data


def main() -> None:
    """Run one isolated plugin; the process exits when the sidecar says close or goes away."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    start = _read_start(sock)
    sys.path[:] = start["sys_path"]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    logging.basicConfig(level=start.get("log_level", logging.INFO), handlers=[handler], force=True)
    os.chdir(start["workdir"])
    confinement = confine(
        ProcessLimits(**start["limits"]),
        read_only=start["read_only"],
        read_write=start["read_write"],
        user=start.get("user"),
        parent=start["parent"],
    )
    sock.setblocking(False)
    host = Host(start, sock, confinement)
    try:
        import uvloop
    except ImportError:
        asyncio.run(host.run())
    else:
        uvloop.run(host.run())
    os._exit(0)  # threads a plugin left running do not keep the process


class _LiveRoutes(RouteCollector):
    """The child's router: keeps every route; once the plugin runs, sends new ones on."""

    def __init__(self) -> None:
        super().__init__()
        self.on_added: Callable[[RouteSpec], None] | None = None

    def add(self, spec: RouteSpec) -> None:
        super().add(spec)
        if self.on_added is not None:
            self.on_added(spec)


class Host:
    """Loads the plugin and serves the sidecar's calls on one connection."""

    def __init__(self, start: dict[str, Any], sock: socket.socket, confinement: str) -> None:
        self.start = start
        self.sock = sock
        self.confinement = confinement
        self.source = PluginSource(
            module=start["module"],
            code=start["code"],
            origin=start["origin"],
            settings=start["settings"],
            code_hash=start["code_hash"],
        )
        self.logger = plugin_logger(self.source.module)
        self.callback_timeout: float = start["callback_timeout"]
        self.route_timeout: float = start["route_timeout"]
        self.router = _LiveRoutes()
        self.routes: list[RouteSpec] = []
        self.instances: list[BasePlugin] = []
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.connection: FrameProtocol | None = None
        #: set when the sidecar says close or goes away
        self.closing = asyncio.Event()
        self.serving = False

    def send(self, message: ChildMessage) -> None:
        assert self.connection is not None
        with contextlib.suppress(ConnectionError):  # the sidecar went away: the process ends anyway
            self.connection.write(encode_child(message))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.connection = await loop.create_unix_connection(
            lambda: FrameProtocol(self._frame, lambda _: self.closing.set()), sock=self.sock
        )
        app = LunaApplication(
            self.start["service"], config=self.start.get("config") or {}, router=self.router
        )
        try:
            version = await load_version(
                self.source, app=app, timeout=self.start["lifecycle_timeout"], leftovers=Leftovers()
            )
        except PluginLoadError as exc:
            self.send(LoadFailed(exc.stage, exc.message))
            return
        self.instances = list(version.instances)
        classes = [
            ClassInfo(type(instance).__name__, "event", instance.eventName)
            if isinstance(instance, BaseEventPlugin)
            else ClassInfo(type(instance).__name__, "background")
            for instance in self.instances
        ]
        routes = [self._route_info(spec) for spec in version.routes()]
        self.send(Ready(classes, [route for route in routes if route is not None], self.confinement))
        self.router.on_added = self._added
        self.serving = True
        await self.closing.wait()
        await self._close()

    def _route_info(self, spec: RouteSpec) -> RouteInfo | None:
        try:
            owner = next(index for index, instance in enumerate(self.instances) if instance is spec.plugin)
        except StopIteration:
            return None  # a route of a plugin object that is not one of the loaded instances
        self.routes.append(spec)
        return RouteInfo(owner, spec.path, sorted(spec.methods))

    def _added(self, spec: RouteSpec) -> None:
        info = self._route_info(spec)
        if info is not None:
            self.send(MoreRoutes([info]))

    def _frame(self, frame: bytes) -> None:
        """One call from the sidecar, taken as it arrives: a synchronous route handler is
        answered right here, anything else runs in a task of its own."""
        message = pickle.loads(frame)
        kind = message[0]
        if not self.serving and kind != "close":
            return  # nothing is sent before Ready; ignore what could not be served
        if kind == "points":
            _, call, index, data, delivery = message
            self._spawn(call, self._event(call, self.instances[index], (decode_points(data),), delivery))
        elif kind == "event":
            _, call, index, payload, delivery = message
            self._spawn(call, self._event(call, self.instances[index], payload, delivery))
        elif kind == "route":
            _, call, index, method, path, query_string, headers, body, match_info, remote = message
            raw = ForwardedRequest(method, path, query_string, headers, remote)
            self._route_now(call, self.routes[index], PluginRequest(raw, body, match_info))
        elif kind == "cancel":
            task = self.calls.get(message[1])
            if task is not None:
                task.cancel()
        elif kind == "ping":
            self.send(Pong(message[1]))
        elif kind == "close":
            self.closing.set()

    async def _close(self) -> None:
        for task in list(self.calls.values()):
            task.cancel()
        await close_instances(
            self.instances,
            timeout=self.start["lifecycle_timeout"],
            logger=self.logger,
            leftovers=Leftovers(),
            source=self.source,
        )

    def _spawn(self, call: int, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.calls[call] = task
        task.add_done_callback(lambda _: self.calls.pop(call, None))

    async def _event(
        self, call: int, instance: BasePlugin, payload: tuple[Any, ...], delivery: DeliveryInfo | None
    ) -> None:
        started = time.perf_counter()
        error: str | None = None
        retry_after: float | None = None
        token = _enter(delivery)  # the task's own context: delivery_context() as in-process
        try:
            assert isinstance(instance, BaseEventPlugin)
            async with asyncio.timeout(self.callback_timeout):
                result = instance.handleEvent(*payload, self.logger)
                if inspect.isawaitable(result):
                    await result
        except asyncio.CancelledError:
            error = "cancelled: the sidecar gave up on this call"
        except TimeoutError:
            error = f"callback timed out after {self.callback_timeout:g} s"
        except MemoryError:
            _out_of_memory()
        except BaseException as exc:  # whatever the plugin raised fails this batch only
            error = describe_exception(exc, self.source.origin)
            asked = getattr(exc, "retry_after", None)
            if isinstance(asked, int | float) and not isinstance(asked, bool):
                retry_after = float(asked)
            self.logger.error("%s.handleEvent failed: %s", type(instance).__name__, error, exc_info=exc)
        finally:
            _leave(token)
        self.send(Done(call, error, time.perf_counter() - started, retry_after))

    def _route_now(self, call: int, spec: RouteSpec, request: PluginRequest) -> None:
        started = time.perf_counter()
        try:
            result = spec.endpoint(request)
        except MemoryError:
            _out_of_memory()
        except BaseException as exc:  # an HTTP exception is its answer; anything else fails the request
            self._answer(call, exc, started)
            return
        if inspect.isawaitable(result):
            self._spawn(call, self._route_later(call, result, started))
        else:
            self._answer(call, result, started)

    async def _route_later(self, call: int, pending: Awaitable[Any], started: float) -> None:
        try:
            async with asyncio.timeout(self.route_timeout):
                result = await pending
        except asyncio.CancelledError:
            self.send(Answer(call, 0, [], b"cancelled", time.perf_counter() - started))
            return
        except MemoryError:
            _out_of_memory()
        except BaseException as exc:
            result = exc
        self._answer(call, result, started)

    def _answer(self, call: int, result: Any, started: float) -> None:
        """What a handler returned (or raised) as its answer: an HTTP exception is its answer;
        anything else that is not a response fails the request."""
        if isinstance(result, BaseException) and not isinstance(result, web.HTTPException):
            description = describe_exception(result, self.source.origin)
            self.send(Answer(call, 0, [], description.encode(), time.perf_counter() - started))
            return
        parts = response_parts(result)
        if parts is None:
            what = f"returned {type(result).__name__} instead of a response that can be sent"
            self.send(Answer(call, 0, [], what.encode(), time.perf_counter() - started))
            return
        status, headers, body = parts
        try:
            self.send(Answer(call, status, headers, body, time.perf_counter() - started))
        except (TypeError, ValueError) as exc:  # a header that does not encode, a body over the frame limit
            what = f"its response could not be sent back: {exc}"
            self.send(Answer(call, 0, [], what.encode(), time.perf_counter() - started))


def _out_of_memory() -> None:
    os.write(
        2, b'{"level": "ERROR", "logger": "luna.sidecar", "message": "out of memory: the process ends"}\n'
    )
    os._exit(EXIT_MEMORY)

"""The sidecar's hardened HTTP/1.1 server: a small asyncio protocol on llhttp (httptools), used by
both the plugin-route listener and the admin listener.

A web framework's machinery per request (a task, request and response objects, header maps,
body streams) costs more CPU than most plugin routes and intake batches, so this server does only
what HTTP needs: llhttp parses, each complete request goes to the listener's handler, and the
reply is written in one write, in request order (pipelining works). A handler answers at once
(bytes) or later (an awaitable of bytes); only the latter costs a task.

What no client can do to it (every limit in :class:`ListenerLimits`; each refusal answered with
its status, the connection closed, and counted in ``luna_http_refused_total{listener,reason}``):

- hold a connection by trickling: a request's headers must arrive within ``header_timeout`` of
  its first byte and its body within ``request_timeout`` (408); an idle connection is closed after
  ``keepalive_timeout`` (a byte does not restart these clocks);
- grow memory with one request: the URL is capped (414), the headers' size and count (431), the
  body (413, read and dropped so the connection stays usable when its length was declared);
- exhaust descriptors or the loop: connections beyond ``max_connections`` get 503 at once and are
  closed; requests beyond ``max_in_flight`` awaited at once get 503; a client that pipelines
  without reading its replies is no longer read from.

``Expect: 100-continue`` is answered; a request llhttp cannot parse gets 400; protocol upgrades
get 400. What a handler raises becomes a 500 for that request only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

__all__ = [
    "HttpRequest",
    "HttpServer",
    "ListenerLimits",
    "RequestHandler",
    "response_bytes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerLimits:
    """What one listener allows a client; every default is safe for a listener open to a cluster."""

    max_body_bytes: int = 8 * 1024 * 1024
    """largest request body; a larger one gets 413"""
    max_url_bytes: int = 8 * 1024
    """longest request target (path and query); a longer one gets 414"""
    max_header_bytes: int = 32 * 1024
    """most bytes of the request line and headers together; more gets 431"""
    max_headers: int = 100
    """most header fields; more gets 431"""
    max_connections: int = 512
    """most open connections; one more gets 503 and is closed"""
    max_in_flight: int = 256
    """most requests whose handler has not answered yet; one more gets 503"""
    header_timeout: float = 10.0
    """seconds from a request's first byte to the end of its headers; then 408"""
    request_timeout: float = 60.0
    """seconds from a request's first byte to the end of its body; then 408"""
    keepalive_timeout: float = 75.0
    """seconds an idle connection is kept open"""


#: what a listener's handler answers: the whole response, now or later
Answer = bytes | Awaitable[bytes]
RequestHandler = Callable[["HttpRequest"], Answer]

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: pipelined requests queued on one connection before it is no longer read from
_PIPELINE_DEPTH = 16


class _Date:
    """The ``Date`` header's value, formatted once per second."""

    second = -1
    text = ""
    #: the end of the Content-Length line and the Date line, as written
    line = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, formatdate(second, usegmt=True)
            cls.line = "\r\nDate: " + cls.text + "\r\n"
        return cls.text


_STATUS_LINES: dict[int, str] = {}


def response_bytes(
    status: int,
    body: bytes,
    *,
    content_type: str | None = "application/json; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
    lines: str = "",
    close: bool = False,
    head: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response. ``headers`` (pairs) and ``lines`` (``Name: value\r\n``
    each, already formatted) must not hold Content-Length, Date or Connection."""
    text = _STATUS_LINES.get(status)
    if text is None:
        text = _STATUS_LINES[status] = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
    if content_type is not None:
        text += "Content-Type: " + content_type + "\r\n"
    if headers:
        for name, value in headers:
            text += name + ": " + value + "\r\n"
    if int(time.time()) != _Date.second:
        _Date.now()
    text += lines + "Content-Length: " + str(len(body)) + _Date.line
    text += "Connection: close\r\n\r\n" if close else "\r\n"
    head_bytes = text.encode("latin-1", "replace")
    return head_bytes if head else head_bytes + body


def _error(status: int, message: str, *, close: bool = True) -> bytes:
    body = ('{"error": "' + message.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()
    return response_bytes(status, body, close=close)


class HttpRequest:
    """One complete request as a handler sees it. ``path`` is percent-decoded as aiohttp decodes
    it (``%2F`` stays encoded); ``path``, ``headers`` and ``query`` are made on first use."""

    __slots__ = (
        "_headers",
        "_path",
        "_query",
        "_query_string",
        "body",
        "body_too_large",
        "close_after",
        "connection",
        "declared_length",
        "keep_alive",
        "method",
        "raw_headers",
        "target",
    )

    def __init__(
        self,
        connection: _Connection,
        method: str,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        keep_alive: bool,
        declared_length: int | None,
        body_too_large: bool,
    ) -> None:
        self.connection = connection
        self.method = method
        self.target = target
        self.raw_headers = raw_headers
        self.body = body
        self.keep_alive = keep_alive
        self.declared_length = declared_length
        self.body_too_large = body_too_large
        #: set by a handler whose answer closes the connection
        self.close_after = not keep_alive
        self._path: str | None = None
        self._query_string = ""
        self._headers: CIMultiDictProxy[str] | None = None
        self._query: MultiDictProxy[str] | None = None

    @property
    def path(self) -> str:
        """The path, percent-decoded (``%2F`` stays encoded)."""
        if self._path is None:
            target = self.target
            if target[:1] == b"/" and b"%" not in target and b"?" not in target and b"#" not in target:
                self._path = target.decode("utf-8", "replace")  # nothing to split or decode
            else:
                self._path, self._query_string = _split_target(target)
        return self._path

    @property
    def query_string(self) -> str:
        """The raw query string, without ``?``."""
        if self._path is None:
            self._path, self._query_string = _split_target(self.target)
        return self._query_string

    @property
    def raw_path(self) -> str:
        """The path as sent (not percent-decoded), without query or fragment."""
        split = _split_raw(self.target)
        return (split[0] if split is not None else self.target).decode("latin-1")

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The request's headers, case-insensitive, values decoded as Latin-1."""
        if self._headers is None:
            found: CIMultiDict[str] = CIMultiDict()
            for name, value in self.raw_headers:
                found.add(name.decode("latin-1"), value.decode("latin-1"))
            self._headers = CIMultiDictProxy(found)
        return self._headers

    def header(self, lowered_name: bytes) -> bytes | None:
        """The first value of the header ``lowered_name`` (lower-case bytes), without the map."""
        return _first_header(self.raw_headers, lowered_name)

    @property
    def query(self) -> MultiDictProxy[str]:
        """Query parameters (decoded, blank values kept)."""
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport (None once closed)."""
        return self.connection.transport

    @property
    def remote(self) -> str | None:
        """The client's address."""
        transport = self.connection.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _first_header(headers: list[tuple[bytes, bytes]], lowered_name: bytes) -> bytes | None:
    """The first value of the header ``lowered_name`` (lower-case bytes) in raw ``headers``."""
    for name, value in headers:
        if len(name) == len(lowered_name) and name.lower() == lowered_name:
            return value
    return None


def _split_raw(target: bytes) -> tuple[bytes, bytes] | None:
    """(path, query) of a request target (origin or absolute form) as sent, fragment dropped;
    None for a target that is no URL at all."""
    if not target.startswith(b"/"):
        try:
            parsed = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return None
        return parsed.path or b"/", parsed.query or b""
    raw_path, _, raw_query = target.partition(b"?")
    return raw_path.split(b"#", 1)[0], raw_query.split(b"#", 1)[0]


def _split_target(target: bytes) -> tuple[str, str]:
    """(decoded path, raw query string) of a request target; one that is no URL is all path, as
    sent."""
    split = _split_raw(target)
    if split is None:
        return target.decode("latin-1"), ""
    raw_path, raw_query = split
    if b"%" in raw_path:
        path = URL.build(path=raw_path.decode("latin-1"), encoded=True).path
    else:
        path = raw_path.decode("utf-8", "replace")
    return path, raw_query.decode("latin-1")


#: method names as llhttp gives them -> as handlers see them (llhttp knows a few dozen methods)
_METHOD_NAMES: dict[bytes, str] = {}


def _method_name(raw: bytes) -> str:
    name = _METHOD_NAMES.get(raw)
    if name is None:
        name = _METHOD_NAMES[raw] = raw.decode("ascii", "replace")
    return name


class _RefusedError(Exception):
    """Raised inside a parser callback to stop parsing; the connection answers and closes."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as their bytes arrive and answers them in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._handler = server.handler
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        #: loop time the current request began (its first byte), or None between requests
        self.started: float | None = None
        self.headers_done = False
        self.idle_since = self._loop.time()
        self._pending: collections.deque[HttpRequest] = collections.deque()
        self._busy = False
        self._paused = False
        self._head_bytes = 0
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._declared: int | None = None
        self._over = False
        #: bytes of the header names and values so far; the value of ``Expect``, if sent
        self._header_size = 0
        self._expect: bytes | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transport
        server = self._server
        if len(server.connections) >= self._limits.max_connections:
            server.refused("too_many_connections")
            self.transport.write(_error(503, "too many connections; try again later"))
            self.transport.close()
            self.transport = None
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self.transport = None
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self._parser.feed_data(data)
        except _RefusedError as refused:
            self.refuse(refused.status, refused.reason, refused.message)
            return
        except httptools.HttpParserUpgrade:
            self.refuse(400, "malformed", "protocol upgrades are not supported here")
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _RefusedError):
                self.refuse(cause.status, cause.reason, cause.message)
            else:
                self.refuse(400, "malformed", f"malformed HTTP request: {exc}")
            return
        if self.started is not None and not self.headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_url_bytes + self._limits.max_header_bytes:
                if not self._url or len(self._url) >= self._limits.max_url_bytes:
                    self.refuse(414, "url_too_long", "request target too long")
                else:
                    self.refuse(431, "headers_too_large", "request headers too large")

    def pause_writing(self) -> None:
        # a client that sends requests without reading the replies: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self._paused:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the connection (replies already written are still sent)."""
        if self.transport is not None:
            self.transport.close()

    def refuse(self, status: int, reason: str, message: str) -> None:
        """Answer ``status`` with ``message``, count ``reason`` and close."""
        self._server.refused(reason)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_error(status, message))
            transport.close()

    # -- llhttp callbacks

    def on_message_begin(self) -> None:
        self._begin()
        self.started = self._loop.time()
        self.headers_done = False
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise _RefusedError(
                414, "url_too_long", f"request target longer than {self._limits.max_url_bytes} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        if len(headers) > self._limits.max_headers:
            raise _RefusedError(
                431, "headers_too_large", f"more than {self._limits.max_headers} header fields"
            )
        self._header_size += len(name) + len(value)
        if len(name) == 14 and name.lower() == b"content-length":
            self._declared = int(value)  # llhttp accepts digits only
        elif len(name) == 6 and name.lower() == b"expect":
            self._expect = value

    def on_headers_complete(self) -> None:
        self.headers_done = True
        limits = self._limits
        if self._header_size + len(self._url) > limits.max_header_bytes:
            raise _RefusedError(
                431, "headers_too_large", f"request headers larger than {limits.max_header_bytes} bytes"
            )
        if self._declared is not None and self._declared > limits.max_body_bytes:
            self._over = True
        expect = self._expect
        if expect is not None and expect.strip().lower() == b"100-continue" and self.transport is not None:
            if self._over:
                # final answer instead of 100 Continue: the client sends no body
                raise _RefusedError(
                    413, "body_too_large", f"body exceeds the limit of {limits.max_body_bytes} bytes"
                )
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._over:
            return
        self._size += len(body)
        if self._size > self._limits.max_body_bytes:
            self._over, self._chunks = True, []
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._over:
            self._server.refused("body_too_large")
        request = HttpRequest(
            self,
            _method_name(self._parser.get_method()),
            self._url,
            self._headers,
            body,
            keep_alive=self._parser.should_keep_alive(),
            declared_length=self._declared,
            body_too_large=self._over,
        )
        self.started = None
        if self._busy or self._pending:
            self._pending.append(request)
            if len(self._pending) >= _PIPELINE_DEPTH and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            return
        self._serve(request)

    # -- answering

    def _serve(self, request: HttpRequest) -> None:
        """Answer ``request`` and then any queued after it; stops at an answer that must wait."""
        while True:
            try:
                answer = self._handler(request)
            except Exception:
                log.exception(
                    "the %s listener failed to answer %s %r",
                    self._server.name,
                    request.method,
                    request.target[:200],
                )
                answer = _error(500, "the sidecar failed to answer this request", close=False)
            if isinstance(answer, bytes):
                if not self._write(answer, request):
                    return
            else:
                server = self._server
                if server.in_flight >= self._limits.max_in_flight:
                    with contextlib.suppress(Exception):
                        cast(Any, answer).close()  # the coroutine never runs
                    server.refused("too_many_requests")
                    if not self._write(
                        _error(503, "too many requests in flight; try again later", close=False), request
                    ):
                        return
                else:
                    self._busy = True
                    server.in_flight += 1
                    task = self._loop.create_task(self._finish(answer, request))
                    server.tasks.add(task)
                    task.add_done_callback(server.tasks.discard)
                    return
            if not self._pending:
                return
            request = self._pending.popleft()
            self._resume_if_drained()

    async def _finish(self, answer: Awaitable[bytes], request: HttpRequest) -> None:
        server = self._server
        try:
            data = await answer
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "the %s listener failed to answer %s %r", server.name, request.method, request.target[:200]
            )
            data = _error(500, "the sidecar failed to answer this request", close=False)
        finally:
            server.in_flight -= 1
        self._busy = False
        if not self._write(data, request) or not self._pending:
            return
        following = self._pending.popleft()
        self._resume_if_drained()
        self._serve(following)

    def _resume_if_drained(self) -> None:
        if self._paused and len(self._pending) < _PIPELINE_DEPTH // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _write(self, data: bytes, request: HttpRequest) -> bool:
        """Write a reply (the connection is closed after it when the request asks, or its handler
        set ``close_after``); False when the connection is (now) closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        if request.close_after:
            transport.close()
            return False
        self.idle_since = self._loop.time()
        return True


class HttpServer:
    """One listener: :meth:`start` listens, :meth:`close` stops listening, closes every connection
    and cancels what its handlers still await."""

    def __init__(
        self,
        handler: RequestHandler,
        *,
        name: str,
        limits: ListenerLimits | None = None,
        registry: CollectorRegistry | None = None,
        refused: Counter | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.limits = limits or ListenerLimits()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self._refused = refused if refused is not None else refused_counter(registry)
        self._refused_children: dict[str, Any] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop = cast(asyncio.AbstractEventLoop, None)

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0); 0 before :meth:`start`."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    def refused(self, reason: str) -> None:
        """Count one refusal of ``reason``."""
        child = self._refused_children.get(reason)
        if child is None:
            child = self._refused_children[reason] = self._refused.labels(self.name, reason)
        child.inc()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; raises OSError when that is not possible."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=self.limits.max_connections
        )
        self._sweeper = asyncio.create_task(self._sweep(), name=f"luna-{self.name}-connection-deadlines")

    def stop_listening(self) -> None:
        """Accept no more connections (those open are kept)."""
        if self._server is not None:
            self._server.close()

    async def close(self, grace: float = 1.0) -> None:
        """Stop listening, give handlers still running ``grace`` seconds, then close everything."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep(self) -> None:
        """Enforce every connection's deadlines (a byte never restarts them)."""
        limits = self.limits
        every = max(0.05, min(limits.header_timeout, limits.keepalive_timeout) / 8)
        while True:
            await asyncio.sleep(every)
            now = self.loop.time()
            for connection in list(self.connections):
                started = connection.started
                if started is not None:
                    if not connection.headers_done and now - started > limits.header_timeout:
                        connection.refuse(408, "header_timeout", "request headers not received in time")
                    elif now - started > limits.request_timeout:
                        connection.refuse(408, "request_timeout", "request body not received in time")
                elif (
                    not connection._busy
                    and not connection._pending
                    and now - connection.idle_since > limits.keepalive_timeout
                ):
                    connection.close()


def refused_counter(registry: CollectorRegistry | None) -> Counter:
    """The counter of refused requests and connections, in ``registry``."""
    return Counter(
        "luna_http_refused",
        "Requests and connections a listener refused, by reason: header_timeout and request_timeout "
        "(408), url_too_long (414), headers_too_large (431), body_too_large (413), too_many_connections "
        "and too_many_requests (503), malformed (400).",
        ["listener", "reason"],
        registry=registry,
    )

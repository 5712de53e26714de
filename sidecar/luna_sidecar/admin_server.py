"""The admin listener's HTTP/1.1 server: a small asyncio protocol on llhttp (httptools).

The admin listener serves two fixed endpoints to the service container, on loopback, and every
answer is computed synchronously (:mod:`luna_sidecar.admin_http`). A web framework's machinery
per request (a task, request and response objects, header maps, body streams) costs more CPU
than decoding a 100-point batch, so this server does only what HTTP needs: llhttp (the parser of
Node.js, through httptools) parses, each complete request goes to :class:`AdminEndpoints`, and
the reply is written in one write, in request order (pipelining works).

What a client may rely on: keep-alive as it asks (HTTP/1.1: by default); ``Expect:
100-continue`` is answered; a body past the limit is read and dropped, not kept, and gets the
intake's 413; ``Content-Encoding: gzip`` or ``deflate`` bodies are inflated (never past the
limit), other encodings get 415; a request llhttp cannot parse gets a 400 and the connection is
closed; a connection idle for ``keepalive_timeout`` seconds (in the middle of a request too) is
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools

from luna_sidecar.admin_http import AdminEndpoints, Reply, json_reply

log = logging.getLogger(__name__)

#: seconds an idle connection is kept open (aiohttp's default)
KEEPALIVE_TIMEOUT = 75.0

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HEAD = (
    b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\nDate: %s\r\n"
)


class _Date:
    """The ``Date`` header's value, formatted once per second."""

    second = -1
    text = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, formatdate(second, usegmt=True).encode()
        return cls.text


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as their bytes arrive and answers each one."""

    def __init__(self, server: AdminServer) -> None:
        self._server = server
        self._endpoints = server.endpoints
        self._limit = server.endpoints.max_body_bytes
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.idle_since = self._loop.time()
        self._begin()

    def _begin(self) -> None:
        self._url = b""
        self._chunks: list[bytes] = []
        self._size = 0
        self._declared: int | None = None
        self._encoding = b""
        self._expects_continue = False
        self._over = False  # the body is past the limit: dropped as it comes
        self._answered = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream server's transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self.idle_since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported here")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        # a client that sends requests without reading the replies: stop reading its requests
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (its pending replies are still sent)."""
        if self._transport is not None:
            self._transport.close()

    # -- llhttp callbacks

    def on_message_begin(self) -> None:
        self._begin()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._declared = int(value)  # llhttp accepts digits only
        elif name == b"expect":
            self._expects_continue = value.strip().lower() == b"100-continue"
        elif name == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        if self._declared is not None and self._declared > self._limit:
            self._over = True
        if self._expects_continue and self._transport is not None:
            if self._over:
                # final answer instead of 100 Continue: the client sends no body, so the
                # connection's state is unknown from here and it is closed
                self._answer(None, close=True)
            else:
                self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._over:
            return
        self._size += len(body)
        if self._size > self._limit:
            self._over, self._chunks = True, []
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._answered:
            return
        body: bytes | None = None
        if not self._over:
            chunks = self._chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._encoding and self._encoding != b"identity":
                inflated = self._inflate(body)
                if isinstance(inflated, Reply):
                    self._write(inflated, close=not self._parser.should_keep_alive())
                    return
                body = inflated
        self._answer(body, close=not self._parser.should_keep_alive())

    # -- answering

    def _answer(self, body: bytes | None, *, close: bool) -> None:
        self._answered = True
        method = self._parser.get_method().decode("ascii", "replace")
        try:
            reply = self._endpoints.respond(method, self._path(), body, declared_length=self._declared)
        except Exception:
            log.exception("the admin listener failed to answer %s %r", method, self._url[:200])
            reply, close = json_reply(500, {"error": "the sidecar failed to answer this request"}), True
        self._write(reply, close=close, head=method == "HEAD")

    def _path(self) -> str:
        url = self._url
        if not url.startswith(b"/"):  # absolute form (http://host/path): take its path
            try:
                url = httptools.parse_url(url).path or b"/"
            except httptools.HttpParserInvalidURLError:
                return url.decode("latin-1")
        return url.split(b"?", 1)[0].split(b"#", 1)[0].decode("latin-1")

    def _inflate(self, body: bytes) -> bytes | Reply | None:
        """``body`` decoded per its Content-Encoding: None when it inflates past the limit, a
        Reply for an encoding or a body that cannot be decoded."""
        encoding = self._encoding
        if encoding in (b"gzip", b"x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif encoding == b"deflate":
            wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped or raw
        else:
            name = encoding.decode("latin-1")
            message = f"Content-Encoding {name!r} is not supported: send identity, gzip or deflate"
            return json_reply(415, {"error": message})
        inflater = zlib.decompressobj(wbits)
        try:
            inflated = inflater.decompress(body, self._limit + 1)
        except zlib.error as exc:
            return json_reply(400, {"error": f"the body could not be decoded as {encoding.decode()}: {exc}"})
        if len(inflated) > self._limit or inflater.unconsumed_tail:
            return None
        return inflated

    def _refuse(self, status: int, message: str) -> None:
        self._write(json_reply(status, {"error": message}), close=True)

    def _write(self, reply: Reply, *, close: bool, head: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        reason = _REASONS.get(reply.status, b"")
        data = _HEAD % (reply.status, reason, len(reply.body), _Date.now())
        data += b"Connection: close\r\n\r\n" if close else b"\r\n"
        transport.write(data if head else data + reply.body)
        if close:
            transport.close()


class AdminServer:
    """The admin listener: :meth:`start` listens, :meth:`close` stops listening and closes every
    connection (nothing is in flight: every request is answered as soon as it is complete)."""

    def __init__(self, endpoints: AdminEndpoints, *, keepalive_timeout: float = KEEPALIVE_TIMEOUT) -> None:
        self.endpoints = endpoints
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0); 0 before :meth:`start`."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; raises OSError when that is not possible."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        self._sweeper = asyncio.create_task(self._close_idle(), name="luna-admin-idle-connections")

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.close()
            await self._server.wait_closed()

    async def _close_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.05, self.keepalive_timeout / 4))
            oldest = loop.time() - self.keepalive_timeout
            for connection in [c for c in self.connections if c.idle_since < oldest]:
                connection.close()

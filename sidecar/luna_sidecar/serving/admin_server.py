"""The admin listener: the event intake and ``GET /plugins`` for the service container, on the
hardened server of :mod:`luna_sidecar.serving.http_server`.

Every answer is computed synchronously (:mod:`luna_sidecar.serving.admin_http`). What a client may rely
on beyond the server's own rules: a body past the limit is read and dropped, not kept, and gets
the intake's 413; ``Content-Encoding: gzip`` or ``deflate`` bodies are inflated (never past the
limit), other encodings get 415.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable
from dataclasses import replace

from prometheus_client import Counter

from luna_sidecar.serving.admin_http import AdminEndpoints, Reply, json_reply
from luna_sidecar.serving.http_server import HttpRequest, HttpServer, ListenerLimits, response_bytes

log = logging.getLogger(__name__)

#: seconds an idle connection is kept open (aiohttp's default)
KEEPALIVE_TIMEOUT = 75.0


class AdminServer(HttpServer):
    """The admin listener: ``start(host, port)`` listens, ``close()`` closes every connection."""

    def __init__(
        self,
        endpoints: AdminEndpoints,
        *,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        limits: ListenerLimits | None = None,
        refused: Counter | None = None,
    ) -> None:
        self.endpoints = endpoints
        limits = replace(
            limits or ListenerLimits(),
            max_body_bytes=endpoints.max_body_bytes,
            keepalive_timeout=keepalive_timeout,
        )
        super().__init__(self._handle, name="admin", limits=limits, refused=refused)

    def _handle(self, request: HttpRequest) -> bytes | Awaitable[bytes]:
        method = request.method
        close = not request.keep_alive
        body: bytes | None = None if request.body_too_large else request.body
        if body is not None:
            encoding = request.header(b"content-encoding")
            if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
                inflated = _inflate(body, encoding.strip().lower(), self.limits.max_body_bytes)
                if isinstance(inflated, Reply):
                    return response_bytes(inflated.status, inflated.body, close=close)
                body = inflated
        try:
            reply = self.endpoints.respond(
                method, request.raw_path, body, declared_length=request.declared_length
            )
        except Exception:
            log.exception("the admin listener failed to answer %s %r", method, request.target[:200])
            reply, close = json_reply(500, {"error": "the sidecar failed to answer this request"}), True
        request.close_after = close
        if not isinstance(reply, Reply):
            return self._later(reply, close=close, head=method == "HEAD")
        return response_bytes(reply.status, reply.body, close=close, head=method == "HEAD")

    async def _later(self, pending: Awaitable[Reply], *, close: bool, head: bool) -> bytes:
        """The bytes of a reply that waits (an event batch being stored durably, a replay)."""
        try:
            reply = await pending
        except Exception:
            log.exception("the admin listener failed to answer")
            reply = json_reply(500, {"error": "the sidecar failed to answer this request"})
        return response_bytes(reply.status, reply.body, close=close, head=head)


def _inflate(body: bytes, encoding: bytes, limit: int) -> bytes | Reply | None:
    """``body`` decoded per its Content-Encoding: None when it inflates past ``limit``, a Reply
    for an encoding or a body that cannot be decoded."""
    if encoding in (b"gzip", b"x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped or raw
    else:
        name = encoding.decode("latin-1")
        return json_reply(
            415, {"error": f"Content-Encoding {name!r} is not supported: send identity, gzip or deflate"}
        )
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        return json_reply(400, {"error": f"the body could not be decoded as {encoding.decode()}: {exc}"})
    if len(inflated) > limit or inflater.unconsumed_tail:
        return None
    return inflated

"""Following a kind of object with a LIST and a WATCH, outside kopf.

:class:`ListWatch` is the loop; a subclass says what to request (:meth:`ListWatch.request`) and
what to do with what arrives (:meth:`ListWatch.listed`, :meth:`ListWatch.changed`). Per scope
(a namespace, or None for all of them): one LIST, then a WATCH from its resourceVersion with
paired timeouts (the server ends a quiet watch after ``server_timeout``, the client gives up
``client_timeout`` after the last byte), a fresh LIST after 410 Gone or silence, and backoff
while the API is away. Bodies are decoded once, straight from the stream; an object larger than
``max_line_bytes`` (far above what etcd accepts) ends the watch and is re-listed.

Used where kopf's per-event machinery costs too much (the sidecars' reports, whose rate grows
with pods) or where kopf cannot select on the server side (Secrets: only labelled ones are ever
sent to the operator).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

log = logging.getLogger("luna.operator")

#: no watch event line may be longer (an object is at most ~1.5 MiB in etcd)
MAX_LINE_BYTES = 4 * 1024 * 1024


class ListWatch:
    """Follows ``namespaces`` (empty: all namespaces) until cancelled; never raises for API
    trouble. ``synced`` is set once every scope has been listed; ``last_contact`` is when the API
    last answered (monotonic); ``watching`` is how many scopes have a watch stream open now."""

    what = "objects"
    """what is followed, for log lines"""

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...] = (),
        server_timeout: int = 60,
        client_timeout: float = 66.0,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.namespaces = namespaces
        self.server_timeout = server_timeout
        self.client_timeout = client_timeout
        self.max_line_bytes = max_line_bytes
        self.synced = asyncio.Event()
        self.last_contact = time.monotonic()
        self.watching = 0
        self._listed: set[str | None] = set()

    # --- what a subclass says -----------------------------------------------------------------

    def request(self, namespace: str | None, **params: Any) -> Any:
        """The LIST (or, with ``watch=True``, WATCH) request of ``namespace`` (None: every
        namespace), made with ``_preload_content=False``: an awaitable of the raw response."""
        raise NotImplementedError

    def listed(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        """Everything there is in ``namespace`` now (what is missing from it is gone)."""
        raise NotImplementedError

    def changed(self, kind: str, item: dict[str, Any]) -> None:
        """One watch event: ``kind`` is ``ADDED``, ``MODIFIED`` or ``DELETED``."""
        raise NotImplementedError

    def restarted(self) -> None:
        """The API failed; the loop retries after a backoff."""

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow every scope until cancelled."""
        scopes: tuple[str | None, ...] = self.namespaces or (None,)
        await asyncio.gather(*(self._follow(scope) for scope in scopes))

    def healthy(self, within: float) -> bool:
        """Whether every scope has a watch stream open (a quiet watch is a live one: a stream the
        API stopped answering on ends ``client_timeout`` after its last byte), or the API answered
        in the last ``within`` seconds."""
        if self.synced.is_set() and self.watching >= len(self.namespaces or (None,)):
            return True
        return time.monotonic() - self.last_contact <= within

    async def _follow(self, namespace: str | None) -> None:
        backoff = 0.5
        while True:
            try:
                version: str | None = await self._list(namespace)
                backoff = 0.5
                while version is not None:  # None: 410 Gone or silence, so list again
                    version = await self._watch(namespace, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarted()
                log.warning("%s unavailable (%s); retrying in %.1f s", self.what, _short(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)

    async def _list(self, namespace: str | None) -> str:
        response = await self.request(namespace, _request_timeout=self.client_timeout)
        try:
            raw = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {raw[:200]!r}")
        finally:
            response.release()
        body = json.loads(raw)
        items = [item for item in body.get("items") or [] if isinstance(item, dict)]
        self.last_contact = time.monotonic()
        self.listed(namespace, items)
        self._listed.add(namespace)
        if len(self._listed) == len(self.namespaces or (None,)):
            self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Follow changes from ``version``; returns the version to resume from, or None to re-list."""
        response = await self.request(
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.server_timeout,
            _request_timeout=aiohttp.ClientTimeout(
                connect=10, sock_connect=10, sock_read=self.client_timeout
            ),
        )
        opened = False
        try:
            if response.status == 410:
                return None
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
            self.last_contact = time.monotonic()
            self.watching += 1
            opened = True
            async for line in self._lines(response):
                self.last_contact = time.monotonic()
                event = json.loads(line)
                kind, item = event.get("type"), event.get("object")
                if not isinstance(item, dict):
                    continue
                if kind == "ERROR":
                    if item.get("code") == 410:
                        return None
                    raise RuntimeError(f"watch error: {str(item)[:300]}")
                version = str((item.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.changed(str(kind), item)
        except TimeoutError:
            log.info("%s watch silent for %.0f s: listing again", self.what, self.client_timeout)
            return None
        finally:
            if opened:
                self.watching -= 1
            response.release()
        self.last_contact = time.monotonic()
        return version  # the server closed the watch on schedule: resume from where we were

    async def _lines(self, response: Any) -> AsyncIterator[bytes]:
        """The stream's lines (a silence longer than ``client_timeout`` raises TimeoutError)."""
        buffer = b""
        while True:
            chunk = await response.content.readany()
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1 :]
                if line.strip():
                    yield line
            if len(buffer) > self.max_line_bytes:
                raise RuntimeError(f"a watch event longer than {self.max_line_bytes} bytes")


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {str(exc)[:200]}"

"""Sending the service's monitoring points and generated events to the sidecar's intake.

:class:`SidecarSender` is what a service keeps for its whole life. Adding a point or events
never waits: it checks the values, appends them to a bounded backlog and returns (O(1) per
point). One task posts what has piled up: points in batches (at ``batch_points`` or
``batch_delay`` seconds after the first one waiting), events one ``sending_event`` body per
add. While the sidecar cannot be reached or answers 503 (starting, restarting, shutting down),
the batch goes back to the front of the backlog and is retried with exponential backoff.
A batch the sidecar refuses (400, 404, 413, 422) is split in halves until the refused items are
alone; those are dropped, counted and logged, never retried. On close, what is left is sent
until a deadline; what still waits then is dropped and counted.

Every point or event added ends up counted exactly once: sent, or dropped (pushed out of a full
backlog, refused by the sidecar, or left at close); :meth:`SidecarSender.stats` shows the
counts and what is buffered now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from luna_plugins_client.backlog import Backlog
from luna_plugins_client.wire import (
    InvalidPointError,
    checked_point,
    encode_event,
    encode_events,
    encode_metadata,
    encode_points,
)

log = logging.getLogger("luna_plugins_client")

#: the environment variable naming the sidecar's admin listener, e.g. ``http://127.0.0.1:8081``
ADMIN_URL_VARIABLE = "LUNA_SIDECAR_ADMIN_URL"
#: the sidecar's default admin listener (loopback: only containers of the same pod reach it)
DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
#: answers that mean "this body will never be accepted": split it, or drop it
REFUSED_STATUSES = frozenset({400, 404, 413, 422})
#: seconds between two warnings about the same kind of trouble
WARN_EVERY = 30.0


def admin_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``url``, else ``$LUNA_SIDECAR_ADMIN_URL``, else the sidecar's default loopback listener.

    Raises ``ValueError`` naming where a URL that is not ``http(s)://...`` came from."""
    environ = os.environ if environ is None else environ
    chosen, origin = (url, "url") if url else (environ.get(ADMIN_URL_VARIABLE), ADMIN_URL_VARIABLE)
    if not chosen:
        return DEFAULT_ADMIN_URL
    if not chosen.startswith(("http://", "https://")):
        raise ValueError(
            f"{origin}: expected http://HOST:PORT of the sidecar's admin listener, got {chosen!r}"
        )
    return chosen.rstrip("/")


@dataclass(frozen=True)
class SenderSettings:
    """How a :class:`SidecarSender` batches, bounds and retries. Defaults suit the sidecar's."""

    max_points: int = 20_000
    """points held at most (waiting or being sent); when full the oldest waiting are dropped"""
    max_events: int = 5_000
    """events held at most, counted over all waiting ``sending_event`` bodies"""
    batch_points: int = 1_000
    """points per ``monitoring_event`` request at most"""
    batch_delay: float = 0.2
    """seconds a point may wait for its batch to fill before it is sent anyway"""
    max_body_bytes: int = 8 * 1024 * 1024
    """the sidecar's ``--max-body-bytes``: larger bodies are split before they are sent"""
    max_batch_items: int = 10_000
    """the sidecar's ``--max-batch-items``: more points or events per request are split"""
    request_timeout: float = 5.0
    """seconds one request to the sidecar may take before it counts as failed (and is retried)"""
    retry_initial: float = 0.1
    """seconds before the first retry; doubled per failure in a row (with jitter)"""
    retry_max: float = 5.0
    """the longest wait between retries"""
    close_timeout: float = 5.0
    """seconds :meth:`SidecarSender.close` keeps sending; what still waits then is dropped"""

    def __post_init__(self) -> None:
        for name in ("max_points", "max_events", "batch_points", "max_body_bytes", "max_batch_items"):
            if getattr(self, name) < 1:
                raise ValueError(f"SenderSettings.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("batch_delay", "request_timeout", "retry_initial", "retry_max", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SenderSettings.{name} must be a positive number of seconds")
        if self.batch_points > min(self.max_points, self.max_batch_items):
            raise ValueError(
                "SenderSettings.batch_points must not exceed max_points nor max_batch_items "
                f"(got {self.batch_points}, {self.max_points}, {self.max_batch_items})"
            )


@dataclass(frozen=True)
class SenderStats:
    """A snapshot of a sender's counters, for the service's own metrics.

    ``*_sent``: accepted by the sidecar (202). ``*_dropped``: will never be sent: pushed out of
    the full backlog, refused by the sidecar (``*_refused`` of them) or still waiting when
    :meth:`SidecarSender.close` gave up. ``retried``: requests that failed and were tried again.
    ``*_buffered``: held now, waiting or being sent. Points added = sent + dropped + buffered.
    """

    points_sent: int
    points_dropped: int
    points_refused: int
    points_buffered: int
    events_sent: int
    events_dropped: int
    events_refused: int
    events_buffered: int
    retried: int

    def as_dict(self) -> dict[str, int]:
        """The counters by name (e.g. for a JSON status page)."""
        return dict(self.__dict__)


@dataclass
class _Events:
    """One ``sending_event`` body: its events (JSON each) and the other members (JSON)."""

    events: list[str]
    metadata: str

    def __len__(self) -> int:
        """Its weight in the backlog: the events it holds."""
        return len(self.events)


Outcome = Literal["sent", "refused", "retry"]


@dataclass
class _Tally:
    sent: int = 0
    refused: int = 0
    lost: int = 0
    """in a request that close() cut short: whether the sidecar took it is unknown"""


def _report_crash(task: asyncio.Task[None]) -> None:
    """A sending task that ended by itself with an error is a bug: say so, loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the sidecar sender stopped sending", exc_info=task.exception())


class SidecarSender:
    """Sends points and events to the sidecar without ever making the caller wait.

    Use it as ``async with SidecarSender() as sender:``, or ``await start()`` / ``await close()``,
    or in an aiohttp app: ``app.cleanup_ctx.append(sender.cleanup_ctx)``. ``url`` defaults to
    ``$LUNA_SIDECAR_ADMIN_URL``, then ``http://127.0.0.1:8081``. The add methods may be called
    before ``start()`` (what they add waits, bounded) and only from the event loop's thread.
    """

    def __init__(self, url: str | None = None, *, settings: SenderSettings | None = None) -> None:
        self.url = admin_url(url)
        self.settings = settings or SenderSettings()
        self._batch_points = self.settings.batch_points
        self._points: Backlog[dict[str, Any]] = Backlog(self.settings.max_points)
        self._events: Backlog[_Events] = Backlog(self.settings.max_events, weighed=True)
        self._points_tally = _Tally()
        self._events_tally = _Tally()
        self._retried = 0
        self._first_waiting = 0.0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flush_now = False
        self._closing = False
        self._closed = False
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing_since: float | None = None
        self._warned: dict[str, float] = {}

    # -- adding (never awaits) -------------------------------------------------------------------

    def add_point(
        self,
        series: str,
        tags: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
        *,
        event_time: float | None = None,
    ) -> None:
        """Queue one monitoring point; ``event_time`` (UNIX seconds) defaults to now.

        ``tags`` and ``fields`` are copied. Raises :class:`InvalidPointError` for a value the
        intake would refuse (the message names it); otherwise never raises and never waits.
        """
        point = checked_point(series, tags, fields, time.time() if event_time is None else event_time)
        if self._closed:
            self._points.dropped += 1
            return
        backlog = self._points
        if not backlog.waiting:  # the first point of a batch: start its clock, wake the sender
            self._first_waiting = time.monotonic()
            self._idle.clear()
            self._wake.set()
        backlog.push(point)
        if backlog.waiting == self._batch_points:
            self._wake.set()

    def add_events(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        handler_id: str,
        account_id: str,
        request_id: str | None = None,
        create_event_time: str | None = None,
        end_event_time: str | None = None,
    ) -> None:
        """Queue the events one request generated (one ``sending_event`` call of the plugins).

        Each event must be a JSON-able mapping; the times are ISO 8601 strings (the sidecar
        fills in now and a request id when they are left out). Raises
        :class:`InvalidPointError` naming what cannot be sent; otherwise never waits. An empty
        ``events`` list is not sent. Larger than the intake takes in one request, it is split.
        """
        encoded = [encode_event(index, event) for index, event in enumerate(events)]
        metadata = {"handlerId": handler_id, "accountId": account_id}
        optional = {
            "requestId": request_id,
            "createEventTime": create_event_time,
            "endEventTime": end_event_time,
        }
        metadata.update({key: value for key, value in optional.items() if value is not None})
        members = encode_metadata(metadata)
        if not encoded:
            return
        if self._closed:
            self._events.dropped += len(encoded)
            return
        limit = self.settings.max_batch_items
        for start in range(0, len(encoded), limit):
            chunk = encoded[start : start + limit]
            self._events.push(_Events(chunk, members))
        self._idle.clear()
        self._wake.set()

    # -- counters ----------------------------------------------------------------------------------

    def stats(self) -> SenderStats:
        """The counters now (see :class:`SenderStats`)."""
        points, events = self._points, self._events
        return SenderStats(
            points_sent=self._points_tally.sent,
            points_dropped=points.dropped + self._points_tally.refused + self._points_tally.lost,
            points_refused=self._points_tally.refused,
            points_buffered=points.waiting + points.in_flight,
            events_sent=self._events_tally.sent,
            events_dropped=events.dropped + self._events_tally.refused + self._events_tally.lost,
            events_refused=self._events_tally.refused,
            events_buffered=events.waiting + events.in_flight,
            retried=self._retried,
        )

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sending (from the event loop that will own the sender). Idempotent."""
        if self._task is not None:
            return
        if self._closed:
            raise RuntimeError("this SidecarSender is closed; make a new one")
        self._session = ClientSession(timeout=ClientTimeout(total=self.settings.request_timeout))
        self._task = asyncio.create_task(self._run(), name="luna-sidecar-sender")
        self._task.add_done_callback(_report_crash)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send what waits now without waiting for batches to fill; returns True once nothing is
        buffered, False when ``timeout`` seconds passed first (what waits stays buffered).
        Needs a started sender (without one it can only time out)."""
        self._flush_now = True
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while not self._is_empty():
                    self._idle.clear()
                    self._wake.set()
                    await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._flush_now = False
        return True

    async def close(self, timeout: float | None = None) -> SenderStats:
        """Stop taking points, send what is buffered for at most ``timeout`` seconds (default
        ``settings.close_timeout``), drop and count the rest, and release the connection.
        Points or events added afterwards are dropped and counted. Idempotent."""
        timeout = self.settings.close_timeout if timeout is None else timeout
        self._closed = True
        if self._task is not None:
            self._closing = True
            self._wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task})
            self._task = None
        for backlog, tally in ((self._points, self._points_tally), (self._events, self._events_tally)):
            tally.lost += backlog.in_flight  # a request cut short by the deadline
            backlog.settle(backlog.in_flight)
        lost_points, lost_events = self._points.clear(), self._events.clear()
        if lost_points or lost_events:
            log.warning(
                "sidecar sender closed with %d point(s) and %d event(s) not delivered",
                lost_points,
                lost_events,
            )
        if self._session is not None:
            await self._session.close()
            self._session = None
        return self.stats()

    async def __aenter__(self) -> SidecarSender:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: started with the app, closed (flushing) with it."""
        await self.start()
        yield
        await self.close()

    # -- the sending task ----------------------------------------------------------------------

    def _is_empty(self) -> bool:
        points, events = self._points, self._events
        return not (points.waiting or points.in_flight or events.waiting or events.in_flight)

    async def _run(self) -> None:
        delay = self.settings.retry_initial
        while True:
            if not await self._work_due():
                return
            outcome = await (self._send_events() if self._events.waiting else self._send_points())
            if outcome == "retry":
                self._retried += 1
                await self._pause(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max)
            else:
                delay = self.settings.retry_initial
            if self._is_empty():
                self._idle.set()

    async def _work_due(self) -> bool:
        """Wait until a batch is due; False once closing and nothing is left."""
        settings = self.settings
        while True:
            points = self._points.waiting
            if self._events.waiting or points >= settings.batch_points:
                return True
            if points and (self._closing or self._flush_now):
                return True
            if self._closing:
                return False
            self._wake.clear()
            if points:
                left = self._first_waiting + settings.batch_delay - time.monotonic()
                if left <= 0:
                    return True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._wake.wait()
            else:
                self._idle.set()
                await self._wake.wait()

    async def _pause(self, seconds: float) -> None:
        """Back off; a close() cuts the pause short only in that the deadline still applies."""
        await asyncio.sleep(seconds)

    async def _send_points(self) -> Outcome:
        backlog = self._points
        batch = backlog.take(self.settings.batch_points)
        if backlog.waiting:
            self._first_waiting = time.monotonic()  # the rest waits from now on
        pending = [batch]
        while pending:
            part = pending.pop()
            outcome, reason = await self._deliver_points(part)
            if outcome == "retry":
                rest = [point for later in reversed(pending) for point in later]
                backlog.give_back(part + rest)
                return "retry"
            if outcome == "refused" and len(part) > 1:
                middle = len(part) // 2
                pending += [part[middle:], part[:middle]]  # still in flight: nothing settles
                continue
            backlog.settle(len(part))
            if outcome == "sent":
                self._points_tally.sent += len(part)
            else:
                self._points_tally.refused += len(part)
                self._warn("refused", "the sidecar refused a monitoring point (dropped): %s", reason)
        return "sent"

    async def _deliver_points(self, points: list[dict[str, Any]]) -> tuple[Outcome, str]:
        try:
            body = encode_points(points)
        except (TypeError, ValueError, RecursionError) as exc:
            return "refused", f"cannot be encoded as JSON: {exc}"
        if len(body) > self.settings.max_body_bytes:
            return "refused", f"the body would be {len(body)} bytes, over max_body_bytes"
        return await self._post("monitoring_event", body)

    async def _send_events(self) -> Outcome:
        backlog = self._events
        pending = backlog.take(1)
        while pending:
            part = pending.pop()
            count = len(part.events)
            body = encode_events(part.events, part.metadata)
            if len(body) > self.settings.max_body_bytes:
                outcome, reason = "refused", f"the body would be {len(body)} bytes, over max_body_bytes"
            else:
                outcome, reason = await self._post("sending_event", body)
            if outcome == "retry":
                rest = [part, *reversed(pending)]
                backlog.give_back(rest)
                return "retry"
            if outcome == "refused" and count > 1:
                middle = count // 2
                pending += [
                    _Events(part.events[middle:], part.metadata),
                    _Events(part.events[:middle], part.metadata),
                ]
                continue
            backlog.settle(count)
            if outcome == "sent":
                self._events_tally.sent += count
            else:
                self._events_tally.refused += count
                self._warn("refused", "the sidecar refused an event (dropped): %s", reason)
        return "sent"

    async def _post(self, event_name: str, body: bytes) -> tuple[Outcome, str]:
        session = self._session
        assert session is not None
        url = f"{self.url}/events/{event_name}"
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                status = response.status
                text = (await response.content.read(500)).decode(errors="replace")
        except (ClientError, OSError, TimeoutError) as exc:
            self._trouble(f"cannot reach the sidecar at {url}: {exc!r}")
            return "retry", str(exc)
        if status == 202:
            if self._failing_since is not None:
                log.info("the sidecar at %s accepts events again", self.url)
                self._failing_since = None
            return "sent", ""
        if status in REFUSED_STATUSES:
            return "refused", f"{status} {text}"
        self._trouble(f"the sidecar at {url} answered {status}: {text}")
        return "retry", f"{status} {text}"

    def _trouble(self, message: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        points, events = self._points, self._events
        buffered = (points.waiting + points.in_flight, events.waiting + events.in_flight)
        self._warn("trouble", "%s; retrying, %d point(s) and %d event(s) buffered", message, *buffered)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            log.warning(message, *args)


__all__ = [
    "ADMIN_URL_VARIABLE",
    "DEFAULT_ADMIN_URL",
    "InvalidPointError",
    "SenderSettings",
    "SenderStats",
    "SidecarSender",
    "admin_url",
]

"""The wire between the sidecar and an isolated plugin's process: length-prefixed frames over
one Unix stream socket.

The sidecar writes pickled tuples (the child trusts its parent); the child writes msgpack
messages that the sidecar decodes into the structs below and nothing else, so a hostile child
can make the sidecar parse data, never run code. Frames the child writes are bounded by
:data:`MAX_FRAME`; a longer one, or one that does not decode, ends the child.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Literal, cast

import msgspec
from msgspec.structs import force_setattr

from luna_plugins.monitoring import MonitoringPoint, ReadOnlyDict

__all__ = [
    "MAX_FRAME",
    "Answer",
    "ChildMessage",
    "ClassInfo",
    "Done",
    "FrameProtocol",
    "LoadFailed",
    "MoreRoutes",
    "Pong",
    "ProtocolError",
    "Ready",
    "RouteInfo",
    "decode_child",
    "decode_points",
    "encode_child",
    "encode_parent",
    "encode_points",
]

#: the largest frame either side accepts (a route's response body must fit)
MAX_FRAME = 64 * 1024 * 1024

_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the protocol (a frame too long, or one that does not decode)."""


class ClassInfo(msgspec.Struct, array_like=True, frozen=True):
    """A plugin class the child instantiated: its name, kind and, for event plugins, event."""

    name: str
    kind: Literal["event", "background"]
    event_name: str = ""


class RouteInfo(msgspec.Struct, array_like=True, frozen=True):
    """A route a background plugin of the child added: the index of the class in
    :attr:`Ready.classes`, the path and the lower-case methods."""

    owner: int
    path: str
    methods: list[str]


class Ready(msgspec.Struct, tag="ready", array_like=True, frozen=True):
    """The plugin is loaded, initialized and started; ``confinement`` says what the child could
    apply of its file-system confinement (``landlock``, or why not)."""

    classes: list[ClassInfo]
    routes: list[RouteInfo]
    confinement: str


class LoadFailed(msgspec.Struct, tag="failed", array_like=True, frozen=True):
    """Loading failed at ``stage`` (import, classes, construct, initialize, start)."""

    stage: str
    message: str


class Done(msgspec.Struct, tag="done", array_like=True, frozen=True):
    """An event call ended: ``error`` is None on success; ``elapsed`` is the callback's time;
    ``retry_after``, the seconds the plugin asked for (``RetryLater``), if it did."""

    call: int
    error: str | None
    elapsed: float
    retry_after: float | None = None


class Answer(msgspec.Struct, tag="answer", array_like=True, frozen=True):
    """A route call's response (``elapsed``: the handler's time in the child)."""

    call: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float


class Pong(msgspec.Struct, tag="pong", array_like=True, frozen=True):
    """The answer to a ping: the child's loop is turning."""

    ping: int


class MoreRoutes(msgspec.Struct, tag="routes", array_like=True, frozen=True):
    """Routes a running background plugin added after start."""

    routes: list[RouteInfo]


ChildMessage = Ready | LoadFailed | Done | Answer | Pong | MoreRoutes

_decoder = msgspec.msgpack.Decoder(ChildMessage)
_encoder = msgspec.msgpack.Encoder()


def _framed(data: bytes) -> bytes:
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(data)} bytes is over the limit of {MAX_FRAME}")
    return _LENGTH.pack(len(data)) + data


def encode_parent(message: object) -> bytes:
    """A frame the sidecar sends."""
    return _framed(pickle.dumps(message, protocol=5))


def encode_child(message: ChildMessage) -> bytes:
    """A frame the child sends."""
    return _framed(_encoder.encode(message))


def decode_child(data: bytes) -> ChildMessage:
    """A child's frame as a message; raises :class:`ProtocolError` for anything else."""
    try:
        return _decoder.decode(data)
    except msgspec.MsgspecError as exc:
        raise ProtocolError(f"the plugin's process sent a message that does not decode: {exc}") from exc


class FrameProtocol(asyncio.Protocol):
    """Frames as they arrive, handed to ``on_frame`` in order without a task or an await per
    frame (the crossing's latency is mostly loop turns); ``on_end`` once the connection ends,
    with the :class:`ProtocolError` of a frame over :data:`MAX_FRAME`, if that is why."""

    def __init__(self, on_frame: Callable[[bytes], None], on_end: Callable[[Exception | None], None]) -> None:
        self.on_frame = on_frame
        self.on_end = on_end
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but offer what is used here
        self.transport = cast(asyncio.Transport, transport)

    def write(self, data: bytes) -> None:
        """Send one encoded frame (buffered by the transport)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4 and not self._ended:
            (length,) = _LENGTH.unpack_from(buffer)
            if length > MAX_FRAME:
                self._end(ProtocolError(f"a frame of {length} bytes is over the limit of {MAX_FRAME}"))
                return
            if len(buffer) < 4 + length:
                return
            frame = bytes(buffer[4 : 4 + length])
            del buffer[: 4 + length]
            self.on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self.transport is not None:
            self.transport.close()
        self.on_end(error)


_points_encoder = msgspec.msgpack.Encoder()
_points_decoder = msgspec.msgpack.Decoder(list[MonitoringPoint])


def encode_points(points: list[MonitoringPoint]) -> bytes:
    """A monitoring batch for the child: msgpack, an order of magnitude cheaper than pickling
    the points (the sidecar's side of the crossing is the one every plugin pays for)."""
    return _points_encoder.encode(points)


def decode_points(data: bytes) -> list[MonitoringPoint]:
    """The batch as the plugin gets it in-process: points with read-only tags and fields."""
    points = _points_decoder.decode(data)
    for point in points:
        force_setattr(point, "tags", ReadOnlyDict(point.tags))
        force_setattr(point, "fields", ReadOnlyDict(point.fields))
    return points

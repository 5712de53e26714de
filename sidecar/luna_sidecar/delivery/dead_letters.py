"""Dead letters: batches that exhausted their retries, kept on disk until replayed or discarded.

One file per batch in the queue's ``dead/`` directory, ``<seq>.dead``: a frame like the log's
(``length | crc32 | payload``) whose payload is ``meta length (u32) | meta (JSON) | body``. The
meta holds the delivery id, the attempts made, the last error and when. A file is written and
fsynced (with its directory) before the batch leaves the queue, so a batch is always in one of the
two (or, after a crash between the two steps, in both: then it is delivered again, same id).
Files that fail their checks are skipped when listing and counted as damaged.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luna_sidecar.delivery.segments import HEADER, MAX_PAYLOAD, Record

_META_LENGTH = struct.Struct("<I")
SUFFIX = ".dead"


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as listed."""

    name: str
    delivery_id: str
    attempts: int
    error: str
    enqueued_at: float
    dead_at: float
    size: int

    def describe(self) -> dict[str, Any]:
        """As ``GET /plugins/{name}/dead-letters`` shows it."""
        return {
            "name": self.name,
            "deliveryId": self.delivery_id,
            "attempts": self.attempts,
            "error": self.error,
            "enqueuedAt": self.enqueued_at,
            "deadAt": self.dead_at,
            "bytes": self.size,
        }


class DeadLetters:
    """The dead letters of one queue. Blocking file I/O: call from a thread or accept the cost
    (dead-lettering is rare; listing reads only the small meta of each file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self.bytes = 0
        self.damaged = 0

    def open(self) -> None:
        """Create the directory; count what it holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count = self.bytes = 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SUFFIX):
                self.count += 1
                self.bytes += entry.stat().st_size

    def add(
        self, record: Record, *, delivery_id: str, attempts: int, error: str, max_bytes: int | None = None
    ) -> tuple[bool, int]:
        """Write ``record`` as a dead letter, durably, keeping the files within ``max_bytes``: the
        oldest dead letters are removed to make room. Returns (written, removed): ``written`` is
        False when the one batch is larger than ``max_bytes`` (nothing is written or removed)."""
        meta = json.dumps(
            {
                "deliveryId": delivery_id,
                "attempts": attempts,
                "error": error[:2000],
                "enqueuedAt": record.enqueued_at,
                "deadAt": time.time(),
            }
        ).encode()
        payload = _META_LENGTH.pack(len(meta)) + meta + record.body
        data = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        removed = 0
        if max_bytes is not None:
            if len(data) > max_bytes:
                return False, 0
            for oldest in self.names():
                if self.bytes + len(data) <= max_bytes:
                    break
                removed += self.remove(oldest)
        name = f"{record.seq:020d}-{time.time_ns()}{SUFFIX}"
        tmp = self.directory / (name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                written = os.write(fd, data)
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / name)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half-written file
            raise
        _fsync_dir(self.directory)
        self.count += 1
        self.bytes += len(data)
        return True, removed

    def _read(self, path: Path, *, with_body: bool) -> tuple[dict[str, Any], bytes, int] | None:
        try:
            raw = path.read_bytes() if with_body else _head(path)
            size = path.stat().st_size
        except OSError:
            return None
        if len(raw) < HEADER.size + _META_LENGTH.size:
            return None
        length, crc = HEADER.unpack_from(raw)
        payload = raw[HEADER.size :]
        if length > MAX_PAYLOAD or (with_body and (len(payload) != length or zlib.crc32(payload) != crc)):
            return None
        (meta_length,) = _META_LENGTH.unpack_from(payload)
        meta_end = _META_LENGTH.size + meta_length
        if meta_end > len(payload):
            return None
        try:
            meta = json.loads(payload[_META_LENGTH.size : meta_end])
        except ValueError:
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("deliveryId"), str):
            return None
        return meta, payload[meta_end:], size

    def names(self) -> list[str]:
        """File names of the dead letters, oldest batch first."""
        try:
            return sorted(entry.name for entry in os.scandir(self.directory) if entry.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def list(self, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest batch first (damaged files are skipped)."""
        found = []
        for name in self.names()[:limit]:
            read = self._read(self.directory / name, with_body=False)
            if read is None:
                continue
            meta, _, size = read
            found.append(
                DeadLetter(
                    name,
                    meta["deliveryId"],
                    int(meta.get("attempts", 0)),
                    str(meta.get("error", "")),
                    float(meta.get("enqueuedAt", 0.0)),
                    float(meta.get("deadAt", 0.0)),
                    size,
                )
            )
        return found

    def load(self, name: str) -> tuple[str, bytes] | None:
        """(delivery id, body) of one dead letter; None when it is gone or damaged."""
        if "/" in name or not name.endswith(SUFFIX):
            return None
        read = self._read(self.directory / name, with_body=True)
        if read is None:
            self.damaged += 1
            return None
        meta, body, _ = read
        return meta["deliveryId"], body

    def remove(self, name: str) -> bool:
        """Delete one dead letter; False when it was not there."""
        if "/" in name or not name.endswith(SUFFIX):
            return False
        path = self.directory / name
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return False
        self.count = max(0, self.count - 1)
        self.bytes = max(0, self.bytes - size)
        return True


def _head(path: Path, size: int = 64 * 1024) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The durable queue of one plugin class: an append-only log of records in segment files.

Layout of a queue directory::

    id                      the queue's identity (default delivery ids are ``<id>-<seq>``)
    acked                   the cursor: every record with a lower sequence number is done (two
                            checksummed slots written in turn, so a torn write leaves the other)
    00000000000000000001.seg   segment files, named after their first sequence number
    quarantine/             segments (or stray files) that failed their checks, moved aside

A record is framed as ``length (u32) | crc32 (u32) | payload`` (little-endian); the payload is
``seq (u64) | enqueued_at (f64, UNIX seconds) | id length (u16) | id | body``. Sequence numbers
grow by one within a segment. What callers may rely on:

* :meth:`SegmentLog.append` writes a whole record to the page cache (or raises, leaving the
  segment as it was, and giving it up for the next sync to delete when all of it is delivered: a
  full disk gets its space back once the backlog is delivered); it is durable once a sync job
  that started after it has run (:mod:`luna_sidecar.delivery.commit`); only durable records are
  handed to the reader.
* Opening a log reads every segment front to back through a :class:`SegmentReader` (reads of
  :data:`READ_CHUNK` bytes, the only memory it holds besides a record larger than that) and
  checks each record's frame, checksum and sequence; delivery reads records the same way. A
  segment with bad bytes (a torn tail after a crash, random bytes) is copied to ``quarantine/``,
  counted and logged once, and cut back to its last good record; the records after the bad bytes
  of that segment are lost, the other segments are delivered.
* The cursor is written by sync jobs too (to the page cache at every round: it survives a
  SIGKILL of the process; fsynced at most every :data:`CURSOR_SYNC_INTERVAL` seconds and at
  close: a power loss can take it back that far). Segments wholly before a written cursor are
  deleted. After a crash the records delivered since the cursor was last written are delivered
  again, with the same delivery id; a cursor taken back by a power loss only means more of them.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.Struct("<II")
META = struct.Struct("<QdH")
ACK = struct.Struct("<QI")
#: bytes between the two cursor slots of the ``acked`` file
ACK_SLOT = 16
#: most seconds between two fsyncs of the cursor
CURSOR_SYNC_INTERVAL = 1.0
SUFFIX = ".seg"
SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
#: a frame announcing more than this is corrupt (bodies are bounded by --max-body-bytes, far less)
MAX_PAYLOAD = 256 * 1024 * 1024
MAX_ID_BYTES = 200


class CorruptRecordError(ValueError):
    """Bytes that are not a whole, intact record."""


@dataclass(frozen=True, slots=True)
class Record:
    """One queued batch: its request body and what the queue knows of it."""

    seq: int
    enqueued_at: float
    delivery_id: str
    body: bytes
    size: int
    """framed bytes on disk"""


def encode_record(seq: int, enqueued_at: float, delivery_id: str, body: bytes) -> bytes:
    """The framed bytes of one record."""
    raw_id = delivery_id.encode()
    if len(raw_id) > MAX_ID_BYTES:
        raise ValueError(f"delivery id longer than {MAX_ID_BYTES} bytes")
    payload = META.pack(seq, enqueued_at, len(raw_id)) + raw_id + body
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _parse_payload(payload: memoryview) -> tuple[int, float, str, int]:
    """(seq, enqueued_at, delivery id, offset of the body) of a checked payload; raises on a bad
    shape. Copies nothing but the delivery id."""
    if len(payload) < META.size:
        raise CorruptRecordError("payload shorter than its header")
    seq, enqueued_at, id_length = META.unpack_from(payload)
    end = META.size + id_length
    if id_length > MAX_ID_BYTES or end > len(payload):
        raise CorruptRecordError("bad delivery id length")
    try:
        delivery_id = str(payload[META.size : end], "utf-8")
    except UnicodeDecodeError:
        raise CorruptRecordError("delivery id is not UTF-8") from None
    return seq, enqueued_at, delivery_id, end


def decode_payload(payload: bytes | memoryview) -> tuple[int, float, str, bytes]:
    """(seq, enqueued_at, delivery id, body) of a checked payload; raises on a bad shape."""
    view = memoryview(payload)
    seq, enqueued_at, delivery_id, end = _parse_payload(view)
    return seq, enqueued_at, delivery_id, bytes(view[end:])


def read_record(fd: int, offset: int, limit: int) -> Record | None:
    """The record at ``offset`` of the open file ``fd`` whose valid bytes end at ``limit``; None
    at ``limit``; raises :class:`CorruptRecordError` for bytes that are not an intact record.
    Reads just that record (two ``pread`` calls); :class:`SegmentReader` reads a file's records in
    order through a read-ahead buffer, with the same checks."""
    return SegmentReader(fd, chunk=0).read(offset, limit)


#: bytes a :class:`SegmentReader` reads from its file at once: the queue's reads of a backlog
#: (start-up scan, delivery) go at the disk's sequential speed with reads this large, while a
#: read per record (about 115 KB for a batch of 1000 points, below the kernel's 128 KiB
#: read-ahead) got about 0.4 of it
READ_CHUNK = 4 << 20


class SegmentReader:
    """Reads the records of one open segment file in order, through a read-ahead buffer.

    What callers may rely on:

    * :meth:`read` and :meth:`check` make the same checks as :func:`read_record` (frame within
      ``limit``, length, CRC-32, the payload's shape) and raise :class:`CorruptRecordError` with
      the same messages; the caller checks the sequence number.
    * Memory: the buffer holds at most ``chunk`` bytes (the bytes of one read); a record larger
      than ``chunk`` is read on its own, into memory of its size, and not kept in the buffer.
    * It never reads at or past the ``limit`` of the call, so ``limit`` may grow between calls
      (a segment being appended to), as long as the bytes below a limit given once do not change
      (the log only appends, and cuts back only bytes it never counted in a segment's size).
    * Reads in order are cheapest (one ``pread`` per ``chunk`` bytes); any offset works (a
      record outside the buffer refills it from that offset).
    """

    def __init__(self, fd: int, *, chunk: int | None = None) -> None:
        self._fd = fd
        self._chunk = READ_CHUNK if chunk is None else chunk
        """bytes read at once; :data:`READ_CHUNK` unless given"""
        self._buffer = memoryview(b"")
        self._start = 0
        """file offset of the buffer's first byte"""

    def read(self, offset: int, limit: int) -> Record | None:
        """The record at ``offset`` (its body copied out of the buffer once); None at ``limit``."""
        frame = self._frame(offset, limit)
        if frame is None:
            return None
        seq, enqueued_at, delivery_id, end = _parse_payload(frame[HEADER.size :])
        return Record(seq, enqueued_at, delivery_id, bytes(frame[HEADER.size + end :]), len(frame))

    def check(self, offset: int, limit: int) -> tuple[int, int] | None:
        """(seq, framed size) of the record at ``offset``, checked as :meth:`read` checks it,
        without copying its body; None at ``limit``."""
        frame = self._frame(offset, limit)
        if frame is None:
            return None
        seq, _, _, _ = _parse_payload(frame[HEADER.size :])
        return seq, len(frame)

    def _frame(self, offset: int, limit: int) -> memoryview | None:
        """The header and payload of the record at ``offset``, length and checksum checked."""
        if offset >= limit:
            return None
        if offset + HEADER.size > limit:
            raise CorruptRecordError("truncated header")
        view = self._bytes(offset, HEADER.size, limit)
        if len(view) < HEADER.size:
            raise CorruptRecordError("truncated header")
        length, crc = HEADER.unpack_from(view)
        if length < META.size or length > MAX_PAYLOAD or offset + HEADER.size + length > limit:
            raise CorruptRecordError("bad length")
        size = HEADER.size + length
        if len(view) < size:
            view.release()  # no reference to the buffer left: a refill frees it before it reads
            view = self._bytes(offset, size, limit)
            if len(view) < size:
                raise CorruptRecordError("truncated payload")
        frame = view[:size]
        if zlib.crc32(frame[HEADER.size :]) != crc:
            raise CorruptRecordError("checksum mismatch")
        return frame

    def _bytes(self, offset: int, size: int, limit: int) -> memoryview:
        """The file's bytes from ``offset``: at least ``size`` of them (``offset + size <=
        limit``) unless the file is shorter. From the buffer if it holds them, else read: ``size``
        bytes on their own when more than ``chunk``, else a refill of up to ``chunk`` bytes."""
        start = offset - self._start
        if start < 0 or start + size > len(self._buffer):
            if size > self._chunk:
                return memoryview(os.pread(self._fd, size, offset))
            self._buffer = memoryview(b"")  # the old buffer goes before the new one is read
            self._buffer = memoryview(os.pread(self._fd, min(self._chunk, limit - offset), offset))
            self._start, start = offset, 0
        return self._buffer[start:]


@dataclass(slots=True)
class Segment:
    """One segment file: records ``first_seq`` .. ``last_seq`` in its first ``size`` bytes."""

    first_seq: int
    path: Path
    size: int = 0
    last_seq: int = -1

    def __post_init__(self) -> None:
        if self.last_seq < 0:
            self.last_seq = self.first_seq - 1

    @property
    def empty(self) -> bool:
        """No record in it."""
        return self.last_seq < self.first_seq


@dataclass(slots=True)
class SyncJob:
    """What one sync of a log does, prepared on the loop and run in the commit thread."""

    log: SegmentLog
    fsync: list[int] = field(default_factory=list)
    close: list[int] = field(default_factory=list)
    sync_dir: bool = False
    committed: int = 0
    """records below this sequence number are durable once the job ran"""
    cursor: int | None = None
    """cursor to write"""
    sync_cursor: bool = False
    """fsync the cursor file too"""
    unlink: list[Path] = field(default_factory=list)
    error: OSError | None = None

    def run(self) -> None:
        """Do the job (in the commit thread); keeps the first error in ``error``."""
        try:
            for fd in self.fsync:
                os.fsync(fd)
            if self.sync_dir:
                _fsync_dir(self.log.directory)
            if self.cursor is not None:
                self.log.write_cursor(self.cursor, sync=self.sync_cursor)
            for path in self.unlink:
                path.unlink(missing_ok=True)
        except OSError as exc:
            self.error = exc
        finally:
            for fd in self.close:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentLog:
    """The segment log of one queue directory; everything but :meth:`SyncJob.run` and
    :meth:`write_cursor` runs on the event loop."""

    def __init__(self, directory: Path, *, segment_bytes: int, logger: logging.Logger) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.logger = logger
        self.queue_id = ""
        self.segments: list[Segment] = []
        self.next_seq = 1
        self.cursor = 1
        """the next record to deliver: everything below it is done (delivered, dead-lettered, dropped)"""
        self.committed = 1
        """records below this sequence number are durable"""
        self.persisted_cursor = 1
        self.quarantined = 0
        """segments (or stray files) moved to quarantine/ since the log was opened"""
        self.total_bytes = 0
        self.done_bytes = 0
        """bytes on disk of records below the cursor"""
        self._fd: int | None = None
        self._active: Segment | None = None
        self._to_sync: list[int] = []
        self._to_close: list[int] = []
        self._new_file = False
        self._read_seg: Segment | None = None
        self._read_fd: int | None = None
        self._reader: SegmentReader | None = None
        self._read_offset = 0
        self._read_next = 1
        self._cursor_fd: int | None = None
        self._cursor_slot = 0
        self._cursor_synced_at = 0.0

    # -- opening

    def open(self) -> None:
        """Create or recover the queue (see the module's docstring); holds at most one read of
        :data:`READ_CHUNK` bytes (or one larger record) in memory at a time."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cursor = self._read_cursor()
        id_file = self.directory / "id"
        try:
            self.queue_id = id_file.read_text().strip()
        except FileNotFoundError:
            self.queue_id = ""
        names = sorted(entry.name for entry in os.scandir(self.directory) if entry.is_file())
        for name in names:
            if name in ("id", "acked", "id.tmp"):
                continue
            match = SEGMENT_NAME.match(name)
            if match is None:
                self._quarantine(self.directory / name, 0, "not a segment file")
                continue
            self._recover(Segment(int(match.group(1)), self.directory / name), cursor or 0)
        if not self.queue_id or (cursor is None and not self.segments):
            # a new queue, or one whose cursor is lost with nothing left: new ids, never reused
            self.queue_id = secrets.token_hex(6)
            tmp = self.directory / "id.tmp"
            tmp.write_text(self.queue_id + "\n")
            os.replace(tmp, id_file)
            _fsync_dir(self.directory)
        last = self.segments[-1].last_seq if self.segments else 0
        self.cursor = max(cursor or 0, self.segments[0].first_seq if self.segments else 0, 1)
        for segment in [segment for segment in self.segments if segment.last_seq < self.cursor]:
            segment.path.unlink(missing_ok=True)  # delivered before the restart
            self.segments.remove(segment)
            self.done_bytes -= segment.size
        self.next_seq = max(last + 1, self.cursor)
        self.committed = self.next_seq
        self.persisted_cursor = self.cursor
        self._read_next = self.cursor
        self.total_bytes = sum(segment.size for segment in self.segments)

    def _read_cursor(self) -> int | None:
        try:
            raw = (self.directory / "acked").read_bytes()
        except FileNotFoundError:
            return None
        found = []
        for offset in (0, ACK_SLOT):
            slot = raw[offset : offset + ACK.size]
            if len(slot) == ACK.size:
                cursor, crc = ACK.unpack(slot)
                if zlib.crc32(slot[:8]) == crc:
                    found.append(int(cursor))
        if found:
            return max(found)  # the cursor only moves forward: the newer of the two slots
        self.logger.error(
            "delivery queue %s: the acked file is damaged; delivering from the start", self.directory
        )
        return None

    def _recover(self, segment: Segment, cursor: int) -> None:
        previous = self.segments[-1] if self.segments else None
        if previous is not None and segment.first_seq <= previous.last_seq:
            self._quarantine(segment.path, 0, "overlaps the segment before it")
            return
        good, expected, problem = 0, segment.first_seq, ""
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            reader = SegmentReader(fd)
            while good < size:
                try:
                    checked = reader.check(good, size)
                except CorruptRecordError as exc:
                    problem = str(exc)
                    break
                if checked is None:
                    break
                seq, framed = checked
                if seq != expected:
                    problem = f"sequence {seq} where {expected} was expected"
                    break
                good += framed
                expected += 1
                if seq < cursor:
                    self.done_bytes += framed
        finally:
            os.close(fd)
        if problem:
            self._quarantine(segment.path, good, problem)
        elif not good:
            segment.path.unlink()  # created, never written (a crash between the two)
        if good:
            segment.size, segment.last_seq = good, expected - 1
            self.segments.append(segment)

    def _quarantine(self, path: Path, keep: int, problem: str) -> None:
        """Copy ``path`` to quarantine/ and cut it to its first ``keep`` bytes (remove it at 0)."""
        target_dir = self.directory / "quarantine"
        target_dir.mkdir(exist_ok=True)
        target = target_dir / f"{path.name}.{time.time_ns()}"
        if keep:
            shutil.copyfile(path, target)
            os.truncate(path, keep)
        else:
            os.replace(path, target)
        _fsync_dir(target_dir)
        _fsync_dir(self.directory)
        self.quarantined += 1
        self.logger.error(
            "delivery queue %s: %s is damaged (%s) and was moved to %s; %s",
            self.directory,
            path.name,
            problem,
            target,
            f"its first {keep} bytes of records are kept" if keep else "none of it is kept",
        )

    # -- writing

    def append(self, body: bytes, *, delivery_id: str = "", now: float | None = None) -> int:
        """Write one record; returns its sequence number. Raises ``OSError`` (disk full...)
        with the log unchanged."""
        active = self._active
        if active is None or active.size >= self.segment_bytes:
            active = self._rotate()
        seq = self.next_seq
        data = encode_record(seq, time.time() if now is None else now, delivery_id, body)
        fd = self._fd
        assert fd is not None
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            os.ftruncate(fd, active.size)
            if not active.empty and active.last_seq < self.cursor:
                # everything in it is done: let the next sync delete it (a full disk gets its
                # space back once the backlog is delivered) and append to a new segment
                self._to_close.append(fd)
                self._fd, self._active = None, None
            raise
        active.size += len(data)
        active.last_seq = seq
        self.total_bytes += len(data)
        self.next_seq = seq + 1
        return seq

    def _rotate(self) -> Segment:
        segment = Segment(self.next_seq, self.directory / f"{self.next_seq:020d}{SUFFIX}")
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        if self._fd is not None:  # only once the new file exists: a failed open changes nothing
            self._to_sync.append(self._fd)
            self._to_close.append(self._fd)
        self._fd = fd
        self._new_file = True
        self._active = segment
        self.segments.append(segment)
        return segment

    @property
    def dirty(self) -> bool:
        """Something to sync: records not durable yet, or a cursor not persisted."""
        return self.committed < self.next_seq or self.persisted_cursor != self.cursor or bool(self._to_close)

    def prepare_sync(self, *, closing: bool = False) -> SyncJob:
        """Take what is to sync now (on the loop); ``closing``: the cursor is fsynced too."""
        job = SyncJob(self, committed=self.next_seq)
        if self.committed < self.next_seq or self._to_sync:
            job.fsync = [*self._to_sync, *([self._fd] if self._fd is not None else [])]
        job.close, self._to_sync, self._to_close = self._to_close, [], []
        job.sync_dir, self._new_file = self._new_file, False
        if self.persisted_cursor != self.cursor or (closing and self._cursor_fd is not None):
            job.cursor = self.cursor
            now = time.monotonic()
            if closing or now - self._cursor_synced_at >= CURSOR_SYNC_INTERVAL:
                job.sync_cursor, self._cursor_synced_at = True, now
        # segments wholly behind the cursor go once it is written (by this job, or before it; a
        # segment given up by a failed append is one of them although the cursor did not move)
        if self.segments and self.segments[0] is not self._active and self.segments[0].last_seq < self.cursor:
            keep: list[Segment] = []
            for segment in self.segments:
                if segment is not self._active and segment.last_seq < self.cursor:
                    job.unlink.append(segment.path)
                    self.total_bytes -= segment.size
                    self.done_bytes -= segment.size
                    if segment is self._read_seg:
                        self._close_reader()
                else:
                    keep.append(segment)
            self.segments = keep
        return job

    def finish_sync(self, job: SyncJob) -> None:
        """Record what a job made durable (on the loop)."""
        if job.error is not None:
            self._to_sync.extend(fd for fd in job.fsync if fd == self._fd)
            return
        self.committed = max(self.committed, job.committed)
        if job.cursor is not None:
            self.persisted_cursor = job.cursor

    def write_cursor(self, cursor: int, *, sync: bool) -> None:
        """Write ``cursor`` into the older of the two slots (commit thread); fsync when ``sync``."""
        if self._cursor_fd is None:
            self._cursor_fd = os.open(self.directory / "acked", os.O_RDWR | os.O_CREAT, 0o600)
        raw = struct.pack("<Q", cursor)
        os.pwrite(self._cursor_fd, raw + struct.pack("<I", zlib.crc32(raw)), self._cursor_slot * ACK_SLOT)
        self._cursor_slot ^= 1
        if sync:
            os.fdatasync(self._cursor_fd)

    # -- reading

    def next_record(self) -> Record | None:
        """The next durable record after the last one returned (or at the cursor, if the cursor
        moved past it); None when there is none yet. A record that fails its checks now (the
        disk changed under the log) ends its segment: the segment is quarantined."""
        if self._read_next < self.cursor:
            self._read_next = self.cursor
            if self._read_seg is not None and self._read_seg.last_seq < self.cursor:
                self._close_reader()
        while self._read_next < self.committed:
            segment = self._read_seg
            if segment is None:
                segment = next((s for s in self.segments if s.last_seq >= self._read_next), None)
                if segment is None:
                    return None
                self._read_seg, self._read_offset = segment, 0
                self._read_fd = os.open(segment.path, os.O_RDONLY)
                self._reader = SegmentReader(self._read_fd)
            reader = self._reader
            assert reader is not None
            try:
                record = reader.read(self._read_offset, segment.size)
            except CorruptRecordError as exc:
                self._close_reader()
                self._drop_damaged(segment, str(exc))
                continue
            if record is None:
                if segment is self._active:
                    return None
                self._close_reader()
                self._read_next = max(self._read_next, segment.last_seq + 1)
                continue
            if record.seq >= self.committed:
                return None
            self._read_offset += record.size
            if record.seq < self._read_next:
                continue
            self._read_next = record.seq + 1
            return record
        return None

    def rewind(self) -> None:
        """Read again from the cursor: the next record is the oldest not done (a new consumer
        takes over, and the record its predecessor had in hand comes again)."""
        self._close_reader()
        self._read_next = self.cursor

    def _drop_damaged(self, segment: Segment, problem: str) -> None:
        if segment is self._active:
            self._active = None  # appends go to a new segment from now on
            if self._fd is not None:
                self._to_close.append(self._fd)
                self._fd = None
        self.segments.remove(segment)
        self.total_bytes -= segment.size
        self._quarantine(segment.path, 0, problem)
        self.cursor = max(self.cursor, segment.last_seq + 1)
        self._read_next = max(self._read_next, segment.last_seq + 1)

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
        self._read_fd, self._reader, self._read_seg, self._read_offset = None, None, None, 0

    # -- the cursor

    def done(self, record: Record) -> None:
        """``record`` is delivered (or dead-lettered): move the cursor past it."""
        if record.seq >= self.cursor:
            self.cursor = record.seq + 1
            self.done_bytes += record.size

    def drop_oldest(self) -> int:
        """Drop the oldest segment holding records not done yet (rotating the active one first if it is the
        only one); returns the records dropped (0 when there is nothing to drop)."""
        pending = [segment for segment in self.segments if segment.last_seq >= self.cursor]
        if not pending:
            return 0
        oldest = pending[0]
        if oldest is self._active:
            self._rotate()
        start = max(self.cursor, oldest.first_seq)
        dropped = oldest.last_seq - start + 1
        self.done_bytes += oldest.size - (self._done_in(oldest))
        self.cursor = oldest.last_seq + 1
        return dropped

    def _done_in(self, segment: Segment) -> int:
        """Bytes of ``segment`` already counted as done."""
        if segment.last_seq < self.cursor:
            return segment.size
        if segment is self._read_seg and self.cursor > segment.first_seq:
            return self._read_offset
        return 0

    # -- what it holds

    @property
    def pending(self) -> int:
        """Records not done yet."""
        return sum(
            max(0, segment.last_seq - max(segment.first_seq, self.cursor) + 1) for segment in self.segments
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes on disk of the records not done yet (what the queue's bound counts)."""
        return max(0, self.total_bytes - self.done_bytes)

    def default_id(self, seq: int) -> str:
        """The delivery id of a record written without one."""
        return f"{self.queue_id}-{seq}"

    def close(self) -> None:
        """Close the files (the loop's last act on this log; sync first)."""
        self._close_reader()
        for fd in (
            *self._to_close,
            *([self._fd] if self._fd is not None else []),
            *([self._cursor_fd] if self._cursor_fd is not None else []),
        ):
            try:
                os.close(fd)
            except OSError:
                pass
        self._to_close, self._to_sync, self._fd, self._active, self._cursor_fd = [], [], None, None, None

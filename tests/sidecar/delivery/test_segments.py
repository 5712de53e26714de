"""The segment log alone: framing, reading through the read-ahead buffer, recovery after a torn
write, quarantine of damaged files, the cursor, group commit (one fsync round for many appends)."""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from pathlib import Path

import pytest

from luna_sidecar.delivery import segments
from luna_sidecar.delivery.commit import GroupCommitter
from luna_sidecar.delivery.segments import (
    HEADER,
    CorruptRecordError,
    Record,
    SegmentLog,
    SegmentReader,
    encode_record,
    read_record,
)

log = logging.getLogger("test")


def opened(directory: Path, segment_bytes: int = 1 << 20) -> SegmentLog:
    segment_log = SegmentLog(directory, segment_bytes=segment_bytes, logger=log)
    segment_log.open()
    return segment_log


def sync(segment_log: SegmentLog) -> None:
    job = segment_log.prepare_sync()
    job.run()
    assert job.error is None
    segment_log.finish_sync(job)


def drain(segment_log: SegmentLog, *, ack: bool = True) -> list[bytes]:
    bodies = []
    while (record := segment_log.next_record()) is not None:
        bodies.append(record.body)
        if ack:
            segment_log.done(record)
    return bodies


def test_framing_round_trip_and_checksum(tmp_path: Path) -> None:
    data = encode_record(7, 1.5, "q-7", b'{"a": 1}')
    length, crc = HEADER.unpack_from(data)
    assert length == len(data) - HEADER.size and crc == zlib.crc32(data[HEADER.size :])
    path = tmp_path / "f"
    path.write_bytes(data + data[:-1])
    fd = os.open(path, os.O_RDONLY)
    try:
        record = read_record(fd, 0, len(data) * 2 - 1)
        assert record is not None and (record.seq, record.delivery_id, record.body) == (7, "q-7", b'{"a": 1}')
        with pytest.raises(CorruptRecordError):
            read_record(fd, len(data), len(data) * 2 - 1)  # the second one lacks its last byte
    finally:
        os.close(fd)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    path.write_bytes(bytes(flipped))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptRecordError, match="checksum"):
            read_record(fd, 0, len(flipped))
    finally:
        os.close(fd)


def test_only_durable_records_are_read_and_order_and_ids_survive_a_reopen(tmp_path: Path) -> None:
    segment_log = opened(tmp_path, segment_bytes=200)  # several segments
    for index in range(10):
        segment_log.append(b"body-%d" % index)
    assert segment_log.next_record() is None  # nothing is durable yet
    sync(segment_log)
    first = segment_log.next_record()
    assert first is not None and first.body == b"body-0"
    segment_log.done(first)
    assert segment_log.pending == 9
    sync(segment_log)  # persists the cursor
    queue_id = segment_log.queue_id
    segment_log.close()
    again = opened(tmp_path, segment_bytes=200)
    assert again.queue_id == queue_id
    assert again.pending == 9
    assert again.pending_bytes == 9 * len(encode_record(0, 0.0, "", b"body-0"))
    assert drain(again) == [b"body-%d" % index for index in range(1, 10)]
    assert again.next_seq == 11  # never reuses a sequence number, so never a delivery id


def test_fully_acked_segments_are_deleted(tmp_path: Path) -> None:
    segment_log = opened(tmp_path, segment_bytes=100)
    for index in range(12):
        segment_log.append(b"x" * 40 + b"%d" % index)
    sync(segment_log)
    before = sorted(tmp_path.glob("*.seg"))
    assert len(before) > 3
    drain(segment_log)
    sync(segment_log)
    after = sorted(tmp_path.glob("*.seg"))
    assert len(after) == 1  # the active segment stays
    assert segment_log.pending == 0 and segment_log.pending_bytes == 0


def test_a_torn_tail_is_quarantined_and_the_records_before_it_kept(tmp_path: Path) -> None:
    segment_log = opened(tmp_path)
    for index in range(5):
        segment_log.append(b"body-%d" % index)
    sync(segment_log)
    segment_log.close()
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as file:
        file.write(encode_record(6, 0.0, "", b"half a record")[:11])  # a crash mid-write
    again = opened(tmp_path)
    assert again.quarantined == 1
    assert len(list((tmp_path / "quarantine").iterdir())) == 1
    assert drain(again) == [b"body-%d" % index for index in range(5)]
    again.append(b"after")
    sync(again)
    assert drain(again) == [b"after"]


def test_random_bytes_are_quarantined_and_the_other_segments_delivered(tmp_path: Path) -> None:
    segment_log = opened(tmp_path, segment_bytes=60)
    for index in range(6):
        segment_log.append(b"body-%d" % index)
    sync(segment_log)
    assert len(segment_log.segments) >= 3
    middle = segment_log.segments[1]
    lost = {b"body-%d" % (seq - 1) for seq in range(middle.first_seq, middle.last_seq + 1)}
    damaged = middle.path
    segment_log.close()
    damaged.write_bytes(os.urandom(300))
    (tmp_path / "stray.bin").write_bytes(os.urandom(50))
    (tmp_path / f"{99:020d}.seg").write_bytes(os.urandom(80))
    again = opened(tmp_path, segment_bytes=60)
    assert again.quarantined == 3
    delivered = drain(again)
    assert delivered == [b"body-%d" % index for index in range(6) if b"body-%d" % index not in lost]
    assert sorted(path.name.split(".")[0] for path in (tmp_path / "quarantine").iterdir()) == sorted(
        [damaged.name[:20], f"{99:020d}", "stray"]
    )


def test_a_damaged_cursor_file_means_redelivery_not_loss(tmp_path: Path) -> None:
    segment_log = opened(tmp_path)
    for index in range(3):
        segment_log.append(b"%d" % index)
    sync(segment_log)
    drain(segment_log)
    sync(segment_log)
    segment_log.close()
    (tmp_path / "acked").write_bytes(b"garbage")
    assert drain(opened(tmp_path)) == [b"0", b"1", b"2"]


def test_drop_oldest_drops_whole_segments_and_counts_them(tmp_path: Path) -> None:
    segment_log = opened(tmp_path, segment_bytes=60)
    for index in range(6):
        segment_log.append(b"body-%d" % index)
    sync(segment_log)
    before = segment_log.pending
    dropped = segment_log.drop_oldest()
    assert dropped >= 1 and segment_log.pending == before - dropped
    assert drain(segment_log)[0] == b"body-%d" % dropped


async def test_group_commit_covers_concurrent_appends_with_few_rounds(tmp_path: Path) -> None:
    committer = GroupCommitter()
    logs = [opened(tmp_path / name) for name in ("a", "b")]
    try:
        futures = []
        for index in range(200):
            segment_log = logs[index % 2]
            segment_log.append(b"%d" % index)
            futures.append(committer.commit(segment_log))
            if index % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
        assert committer.rounds < 20  # one fsync round serves many appends
        for segment_log in logs:
            assert segment_log.committed == segment_log.next_seq == 101
            assert len(drain(segment_log)) == 100
        await committer.flush()
    finally:
        committer.close()


def test_an_empty_segment_left_by_a_crash_is_removed(tmp_path: Path) -> None:
    segment_log = opened(tmp_path)
    segment_log.append(b"0")
    sync(segment_log)
    drain(segment_log)
    sync(segment_log)
    segment_log.close()
    (tmp_path / f"{2:020d}.seg").write_bytes(b"")  # the next segment, created but never written
    again = opened(tmp_path)
    assert again.quarantined == 0
    again.append(b"1")  # would collide with the empty file
    sync(again)
    assert drain(again) == [b"1"]


async def test_a_queue_dir_too_small_for_the_bound_is_reported(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from luna_contract.delivery import DeliveryPolicy
    from luna_plugins.handler_event.base_plugin import BaseEventSendingPlugin
    from luna_sidecar.delivery import DeliveryService, DeliverySettings
    from luna_sidecar.observability import RuntimeMetrics

    class Plugin(BaseEventSendingPlugin):
        async def sendEvents(self, *args: object, **kwargs: object) -> None:
            pass

    registry = CollectorRegistry()
    service = DeliveryService(
        DeliverySettings(tmp_path, DeliveryPolicy(mode="at-least-once", max_queue_bytes=1 << 40)),
        metrics=RuntimeMetrics(registry),
        registry=registry,
    )
    worker = service.worker("p", Plugin(None), timeout=1.0, logger=log)  # type: ignore[arg-type]
    warning = worker.queue.describe()["capacityWarning"]
    assert warning is not None and "queue bound of 1099511627776 bytes" in warning
    await service.close()


def test_a_failed_append_leaves_the_log_as_it_was_and_gives_up_a_delivered_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_log = opened(tmp_path, segment_bytes=1 << 20)
    for index in range(3):
        segment_log.append(b"batch %d" % index)
    sync(segment_log)
    assert drain(segment_log) == [b"batch 0", b"batch 1", b"batch 2"]
    sync(segment_log)  # the cursor is written: the next sync has no cursor to write
    full_segment = segment_log.segments[0].path
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        real_write(fd, data[:5])  # a torn write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        segment_log.append(b"batch 3")
    monkeypatch.setattr(os, "write", real_write)
    assert segment_log.next_seq == 4 and full_segment.stat().st_size == segment_log.segments[0].size
    sync(segment_log)  # every record of the segment is delivered: the sync deletes it
    assert not full_segment.exists() and segment_log.pending_bytes == 0
    segment_log.append(b"batch 3")  # into a new segment
    sync(segment_log)
    assert drain(segment_log) == [b"batch 3"]
    sync(segment_log)
    segment_log.close()
    assert drain(opened(tmp_path)) == []  # nothing comes again after a restart


def test_a_failed_append_keeps_a_segment_that_holds_batches_not_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_log = opened(tmp_path)
    segment_log.append(b"waiting")
    sync(segment_log)
    monkeypatch.setattr(os, "write", lambda fd, data: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError):
        segment_log.append(b"refused")
    monkeypatch.undo()
    sync(segment_log)
    segment_log.append(b"next")
    sync(segment_log)
    assert drain(segment_log) == [b"waiting", b"next"]
    segment_log.close()


def test_a_segment_that_cannot_be_created_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment_log = opened(tmp_path, segment_bytes=64)
    segment_log.append(b"x" * 100)  # fills the first segment: the next append rotates
    real_open = os.open

    def no_inodes(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".seg"):
            raise OSError(28, "No space left on device")
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_inodes)
    with pytest.raises(OSError):
        segment_log.append(b"y")
    monkeypatch.undo()
    sync(segment_log)  # the first segment's file is still open and synced, not closed under it
    segment_log.append(b"y")
    sync(segment_log)
    segment_log.append(b"z")  # the new segment's file stayed open through that sync
    sync(segment_log)
    assert drain(segment_log) == [b"x" * 100, b"y", b"z"]
    segment_log.close()


def write_records(path: Path, bodies: list[bytes], first_seq: int = 1) -> list[int]:
    """Write one record per body to ``path``; returns the offset of each, and the end."""
    offsets, data = [0], b""
    for seq, body in enumerate(bodies, first_seq):
        data += encode_record(seq, float(seq), f"q-{seq}", body)
        offsets.append(len(data))
    path.write_bytes(data)
    return offsets


class PreadSpy:
    """Counts and checks the ``os.pread`` calls of the code under test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int]] = []  # (offset, size)
        real = os.pread

        def pread(fd: int, size: int, offset: int) -> bytes:
            self.calls.append((offset, size))
            return real(fd, size, offset)

        monkeypatch.setattr(os, "pread", pread)


def read_all(reader: SegmentReader, limit: int) -> list[Record]:
    records, offset = [], 0
    while (record := reader.read(offset, limit)) is not None:
        records.append(record)
        offset += record.size
    return records


@pytest.mark.parametrize("chunk", [1, 7, 50, 64, 97, 128, 1000, 1 << 20])
def test_the_reader_reads_records_across_its_buffer_boundaries_as_read_record_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    # bodies of many sizes: headers and payloads cut at every place by the chunk boundaries,
    # records smaller and larger than the buffer, one exactly filling a 64-byte buffer
    bodies = [b"%d" % index * (index % 13) for index in range(60)] + [b"x" * (64 - 8 - 18 - 4)]
    path = tmp_path / "s.seg"
    offsets = write_records(path, bodies)
    assert len(encode_record(61, 61.0, "q-61", bodies[-1])) == 64
    limit = offsets[-1]
    fd = os.open(path, os.O_RDONLY)
    try:
        expected = [read_record(fd, offset, limit) for offset in offsets[:-1]]
        spy = PreadSpy(monkeypatch)
        got = read_all(SegmentReader(fd, chunk=chunk), limit)
    finally:
        os.close(fd)
    assert got == expected
    assert [record.body for record in got] == bodies
    assert all(offset + size <= limit for offset, size in spy.calls)  # never past the limit
    if chunk >= limit:
        assert len(spy.calls) == 1  # the whole file in one read
    largest = max(record.size for record in got)
    assert max(size for _, size in spy.calls) <= max(chunk, largest)  # the memory bound


def test_a_damaged_record_after_a_refill_raises_where_read_record_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [b"body-%03d" % index for index in range(40)]
    path = tmp_path / "s.seg"
    offsets = write_records(path, bodies)
    damaged = 30  # in the third or later buffer of 256 bytes
    assert offsets[damaged] > 2 * 256
    raw = bytearray(path.read_bytes())
    raw[offsets[damaged + 1] - 1] ^= 1  # the last byte of its body
    path.write_bytes(bytes(raw))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(CorruptRecordError, match="checksum"):
            read_record(fd, offsets[damaged], offsets[-1])
        reader = SegmentReader(fd, chunk=256)
        for index in range(damaged):
            record = reader.read(offsets[index], offsets[-1])
            assert record is not None and record.body == bodies[index]
            assert reader.check(offsets[index], offsets[-1]) == (index + 1, record.size)
        with pytest.raises(CorruptRecordError, match="checksum"):
            reader.check(offsets[damaged], offsets[-1])
        with pytest.raises(CorruptRecordError, match="checksum"):
            reader.read(offsets[damaged], offsets[-1])
        record = reader.read(offsets[damaged + 1], offsets[-1])  # the next one is intact
        assert record is not None and record.body == bodies[damaged + 1]
    finally:
        os.close(fd)


def test_the_reader_checks_frames_against_the_limit_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.seg"
    offsets = write_records(path, [b"a" * 50, b"b" * 50])
    fd = os.open(path, os.O_RDONLY)
    try:
        for chunk in (16, 1 << 20):
            reader = SegmentReader(fd, chunk=chunk)
            assert reader.read(offsets[2], offsets[2]) is None
            with pytest.raises(CorruptRecordError, match="bad length"):
                reader.read(offsets[1], offsets[2] - 1)  # the limit cuts the record
            with pytest.raises(CorruptRecordError, match="truncated header"):
                reader.read(offsets[1], offsets[1] + HEADER.size - 1)
            with pytest.raises(CorruptRecordError, match="truncated header"):
                SegmentReader(fd, chunk=chunk).read(offsets[2], offsets[2] + 10)  # the file ends
            record = reader.read(offsets[1], offsets[2])  # the bad calls left nothing wrong behind
            assert record is not None and record.body == b"b" * 50
    finally:
        os.close(fd)
    os.truncate(path, offsets[2] - 5)  # the file is shorter than the limit given: cut mid-payload
    fd = os.open(path, os.O_RDONLY)
    try:
        for chunk in (16, 1 << 20):
            with pytest.raises(CorruptRecordError, match="truncated payload"):
                SegmentReader(fd, chunk=chunk).read(offsets[1], offsets[2])
            reader = SegmentReader(fd, chunk=chunk)
            assert reader.read(0, offsets[2]) is not None
            with pytest.raises(CorruptRecordError, match="truncated payload"):
                reader.read(offsets[1], offsets[2])  # after a read that buffered its first bytes
    finally:
        os.close(fd)


def test_the_reader_follows_a_segment_that_grows_without_reading_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.seg"
    first = encode_record(1, 1.0, "q-1", b"first")
    path.write_bytes(first + b"\xff" * 40)  # bytes being written, not counted in the segment yet
    fd = os.open(path, os.O_RDONLY)
    try:
        spy = PreadSpy(monkeypatch)
        reader = SegmentReader(fd, chunk=1 << 20)
        record = reader.read(0, len(first))
        assert record is not None and record.body == b"first"
        assert reader.read(len(first), len(first)) is None
        second = encode_record(2, 2.0, "q-2", b"second")
        with path.open("r+b") as file:  # the append finishes: the segment grows
            file.seek(len(first))
            file.write(second)
        record = reader.read(len(first), len(first) + len(second))
        assert record is not None and record.body == b"second"  # not the stale bytes
        assert spy.calls == [(0, len(first)), (len(first), len(second))]
    finally:
        os.close(fd)


def test_a_record_larger_than_the_buffer_is_read_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [b"small", os.urandom(5000), b"after"]
    path = tmp_path / "s.seg"
    offsets = write_records(path, bodies)
    fd = os.open(path, os.O_RDONLY)
    try:
        spy = PreadSpy(monkeypatch)
        got = read_all(SegmentReader(fd, chunk=1024), offsets[-1])
    finally:
        os.close(fd)
    assert [record.body for record in got] == bodies
    big = offsets[2] - offsets[1]
    assert (offsets[1], big) in spy.calls  # exactly that record
    assert all(size <= 1024 for _, size in spy.calls if size != big)


def test_recovery_and_delivery_through_small_buffers_keep_every_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(segments, "READ_CHUNK", 100)  # records of 38-40 bytes: many refills
    segment_log = opened(tmp_path)
    for index in range(30):
        segment_log.append(b"body-%02d" % index)
    sync(segment_log)
    size = segment_log.segments[0].size
    record_size = size // 30
    segment_log.close()
    (segment,) = tmp_path.glob("*.seg")
    raw = bytearray(segment.read_bytes())
    raw[20 * record_size + HEADER.size + 3] ^= 0x40  # record 21's sequence number: a bad checksum
    segment.write_bytes(bytes(raw))
    again = opened(tmp_path)
    assert again.quarantined == 1 and "checksum mismatch" in caplog.text
    assert segment.stat().st_size == 20 * record_size  # cut back to its last good record
    assert again.pending == 20 and again.pending_bytes == 20 * record_size
    assert drain(again, ack=False) == [b"body-%02d" % index for index in range(20)]
    again.close()

    # the same bytes, but a record with an intact checksum and the wrong sequence number
    raw = bytearray(segment.read_bytes())[: 10 * record_size]
    raw += encode_record(12, 0.0, "", b"body-11") * 3  # 11 is missing
    segment.write_bytes(bytes(raw))
    again = opened(tmp_path)
    assert again.quarantined == 1 and len(list((tmp_path / "quarantine").iterdir())) == 2
    assert "sequence 12 where 11 was expected" in caplog.text
    assert segment.stat().st_size == 10 * record_size
    assert drain(again, ack=False) == [b"body-%02d" % index for index in range(10)]
    again.close()


def test_a_record_damaged_under_the_log_ends_its_segment_when_read_through_the_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "READ_CHUNK", 100)
    segment_log = opened(tmp_path, segment_bytes=15 * 33)  # two segments of 15 records of 33 bytes
    for index in range(30):
        segment_log.append(b"body-%02d" % index)
    sync(segment_log)
    first = segment_log.segments[0]
    assert len(segment_log.segments) == 2 and first.size == 15 * 33
    record_size = 33
    got = [segment_log.next_record() for _ in range(2)]
    assert [record.body for record in got if record is not None] == [b"body-00", b"body-01"]
    with first.path.open("r+b") as file:  # the disk changes under the log, beyond the buffer
        file.seek(10 * record_size + HEADER.size + 20)
        file.write(b"?")
    delivered = drain(segment_log, ack=False)
    assert delivered == [b"body-%02d" % index for index in (*range(2, 10), *range(15, 30))]
    assert segment_log.quarantined == 1 and not first.path.exists()
    segment_log.close()


def test_reading_a_segment_holds_one_read_of_the_buffer_size_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    chunk = 256 << 10
    monkeypatch.setattr(segments, "READ_CHUNK", chunk)
    segment_log = opened(tmp_path, segment_bytes=4 << 20)
    body = os.urandom(10_000)
    for _ in range(300):  # 3 MB in one segment
        segment_log.append(body)
    sync(segment_log)
    segment_log.close()
    tracemalloc.start()
    try:
        again = opened(tmp_path, segment_bytes=4 << 20)  # the start-up scan
        _, scan_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = 0
        while again.next_record() is not None:  # delivery, each record let go once read
            count += 1
        assert count == 300
        _, replay_peak = tracemalloc.get_traced_memory()
        again.close()
    finally:
        tracemalloc.stop()
    assert scan_peak < chunk + (64 << 10)  # one buffer: never the old one and the new one at once
    assert replay_peak < chunk + (64 << 10)

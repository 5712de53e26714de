"""The segment log alone: framing, recovery after a torn write, quarantine of damaged files,
the cursor, group commit (one fsync round for many appends)."""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from pathlib import Path

import pytest

from luna_sidecar.delivery.commit import GroupCommitter
from luna_sidecar.delivery.segments import HEADER, CorruptRecordError, SegmentLog, encode_record, read_record

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

"""Dead letters on disk: written durably, listed, and kept within their bound."""

from __future__ import annotations

from pathlib import Path

from luna_sidecar.delivery.dead_letters import DeadLetters
from luna_sidecar.delivery.segments import Record

KIB = 1024


def record(seq: int, size: int) -> Record:
    return Record(seq, 1.0, f"q-{seq}", b"x" * size, size)


def opened(directory: Path) -> DeadLetters:
    dead = DeadLetters(directory)
    dead.open()
    return dead


def test_the_oldest_dead_letters_make_room_for_a_new_one(tmp_path: Path) -> None:
    dead = opened(tmp_path / "dead")
    bound = 1024 * KIB
    results = [
        dead.add(record(seq, 300 * KIB), delivery_id=f"q-{seq}", attempts=2, error="down", max_bytes=bound)
        for seq in range(1, 6)
    ]
    # three fit in 1 MiB: the fourth removes the first, the fifth the second
    assert results == [(True, 0), (True, 0), (True, 0), (True, 1), (True, 1)]
    assert [letter.delivery_id for letter in dead.list()] == ["q-3", "q-4", "q-5"]
    assert dead.count == 3 and dead.bytes <= bound
    assert dead.bytes == sum(path.stat().st_size for path in (tmp_path / "dead").iterdir())
    reopened = opened(tmp_path / "dead")  # what a restart counts
    assert (reopened.count, reopened.bytes) == (dead.count, dead.bytes)


def test_a_batch_larger_than_the_bound_is_not_written_and_removes_nothing(tmp_path: Path) -> None:
    dead = opened(tmp_path / "dead")
    assert dead.add(record(1, 100 * KIB), delivery_id="q-1", attempts=1, error="e", max_bytes=1024 * KIB)
    written, removed = dead.add(
        record(2, 1024 * KIB), delivery_id="q-2", attempts=1, error="e", max_bytes=1024 * KIB
    )
    assert (written, removed) == (False, 0)
    assert [letter.delivery_id for letter in dead.list()] == ["q-1"]


def test_a_lowered_bound_applies_at_the_next_dead_letter(tmp_path: Path) -> None:
    dead = opened(tmp_path / "dead")
    for seq in range(1, 5):
        dead.add(record(seq, 200 * KIB), delivery_id=f"q-{seq}", attempts=1, error="e")  # no bound
    assert dead.count == 4
    written, removed = dead.add(
        record(5, 200 * KIB), delivery_id="q-5", attempts=1, error="e", max_bytes=450 * KIB
    )
    assert (written, removed) == (True, 3)
    assert [letter.delivery_id for letter in dead.list()] == ["q-4", "q-5"]


def test_a_stray_file_is_never_removed_to_make_room(tmp_path: Path) -> None:
    dead = opened(tmp_path / "dead")
    stray = tmp_path / "dead" / "notes.txt"
    stray.write_bytes(b"y" * 600 * KIB)
    for seq in range(1, 4):
        dead.add(record(seq, 400 * KIB), delivery_id=f"q-{seq}", attempts=1, error="e", max_bytes=1024 * KIB)
    assert stray.exists()
    assert [letter.delivery_id for letter in dead.list()] == ["q-2", "q-3"]

"""Whether this replica is the active one, read from the peers a kopf peering object lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from luna_operator.peering import is_active

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 30) -> dict[str, object]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


def test_a_live_peer_of_higher_or_equal_priority_pauses_this_replica() -> None:
    assert is_active({"me": peer(10, 0), "low": peer(5, 1)}, "me", 10, NOW)
    assert not is_active({"me": peer(10, 0), "high": peer(20, 1)}, "me", 10, NOW)
    assert not is_active({"me": peer(10, 0), "twin": peer(10, 1)}, "me", 10, NOW)  # kopf pauses both


def test_dead_peers_and_entries_of_another_shape_do_not_count() -> None:
    status = {
        "high-but-dead": peer(20, 31),
        "odd": "not an object",
        "bad": {"lastseen": "when?", "priority": 99},
    }
    assert is_active(status, "me", 10, NOW)
    assert is_active({}, "me", 10, NOW)  # no peering object (a namespace without one)

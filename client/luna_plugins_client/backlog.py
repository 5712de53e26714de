"""What a sender holds while it waits for the sidecar: a queue bounded by weight.

A weight is what an item costs against the bound: 1 per monitoring point, the number of events
of an events batch (``len(item)`` in a backlog made with ``weighed=True``). The bound counts the
items waiting *and* those taken for a request still under way, so the memory a sender holds
never exceeds it, whatever the sidecar does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """Items in arrival order, at most ``capacity`` in weight (waiting plus in flight).

    When a new item does not fit, the **oldest waiting** items are dropped to make room: what is
    newest is what the service's monitoring most needs once the sidecar is back. An item is
    dropped itself only when even an empty waiting queue could not take it (it is heavier than
    the bound, or the request under way holds the rest). ``dropped`` counts dropped weight.
    Items are held as they are (no wrapper per item). Not thread-safe: one event loop owns it.
    """

    __slots__ = ("_items", "_weighed", "capacity", "dropped", "in_flight", "waiting")

    def __init__(self, capacity: int, *, weighed: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"a backlog needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self._weighed = weighed
        self._items: deque[T] = deque()
        self.waiting = 0
        """weight waiting to be taken (read-only outside this class)"""
        self.in_flight = 0
        """weight taken by :meth:`take` and not yet given back or settled"""
        self.dropped = 0

    def __len__(self) -> int:
        """Items waiting."""
        return len(self._items)

    def weight(self, item: T) -> int:
        """What ``item`` counts against the bound."""
        return len(item) if self._weighed else 1  # type: ignore[arg-type]

    def push(self, item: T) -> bool:
        """Append ``item``; O(1) amortised. Returns False when ``item`` itself was dropped."""
        weight = len(item) if self._weighed else 1  # type: ignore[arg-type]
        room = self.capacity - self.in_flight
        if self.waiting + weight <= room:  # the common case: nothing to drop
            self._items.append(item)
            self.waiting += weight
            return True
        if weight > room:
            self.dropped += weight
            return False
        items = self._items
        while self.waiting + weight > room:
            old = self.weight(items.popleft())
            self.waiting -= old
            self.dropped += old
        items.append(item)
        self.waiting += weight
        return True

    def take(self, max_weight: int) -> list[T]:
        """The oldest waiting items up to ``max_weight`` in total (at least one item when any
        waits); they count as in flight until :meth:`settle` or :meth:`give_back`."""
        taken: list[T] = []
        total = 0
        items = self._items
        while items and (not taken or total + self.weight(items[0]) <= max_weight):
            item = items.popleft()
            taken.append(item)
            total += self.weight(item)
        self.waiting -= total
        self.in_flight += total
        return taken

    def settle(self, weight: int) -> None:
        """``weight`` taken earlier is done with (delivered, refused or given up)."""
        self.in_flight -= weight

    def give_back(self, items: Iterable[T]) -> None:
        """Put taken items back at the front, in their order (the request failed; they are the
        oldest). The bound holds: they were counted while in flight."""
        items = list(items)
        for item in reversed(items):
            weight = self.weight(item)
            self._items.appendleft(item)
            self.waiting += weight
            self.in_flight -= weight

    def clear(self) -> int:
        """Drop everything waiting; returns its weight (also counted in ``dropped``)."""
        weight = self.waiting
        self._items.clear()
        self.waiting = 0
        self.dropped += weight
        return weight


__all__ = ["Backlog"]

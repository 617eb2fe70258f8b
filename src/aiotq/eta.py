"""The worker's ETA heap: messages held until due. Pure: the caller passes the time."""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")


class EtaHeap(Generic[T]):
    """Items ordered by due time (then by arrival); ``pop_due(now)`` takes the due ones."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> bool:
        """Add ``item``; return True when it is now the earliest (the timer must re-arm)."""
        heapq.heappush(self._heap, (due, next(self._counter), item))
        return self._heap[0][2] is item

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def drain(self) -> list[T]:
        """Remove and return every item (shutdown)."""
        items = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return items

"""In-process result backend (``memory://``): per-task state history, pushed to watchers."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from .._waiters import Waiters, wait_any
from .base import BackendContext, Meta


@dataclass(slots=True)
class _Record:
    states: deque[bytes]
    expires_at: float | None
    #: How many states were ever appended; watchers index by it so a trimmed head is skipped.
    appended: int = 0


@dataclass(slots=True)
class _Store:
    records: dict[str, _Record] = field(default_factory=dict)
    waiters: Waiters = field(default_factory=Waiters)
    #: (expires_at, task_id), so expiring is a pop of what is due, not a scan.
    expiries: list[tuple[float, str]] = field(default_factory=list)


class MemoryBackend:
    def __init__(self, context: BackendContext) -> None:
        self._context = context
        self._store: _Store = context.shared.setdefault(f"memory-backend:{context.url}", _Store())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def on_task_call(self, task_id: str) -> str | None:
        return None

    async def store(self, meta: Meta, *, reply_to: str | None = None) -> None:
        settings = self._context.settings
        now = self._context.clock.time()
        self._expire(now)
        task_id = str(meta["task_id"])
        record = self._store.records.get(task_id)
        expires_at = now + settings.result_expires if settings.result_expires else None
        if record is None:
            record = _Record(deque(maxlen=settings.result_state_history), expires_at)
            self._store.records[task_id] = record
        record.states.append(self._context.encode(meta))
        record.appended += 1
        record.expires_at = expires_at
        if expires_at is not None:
            heapq.heappush(self._store.expiries, (expires_at, task_id))
        self._store.waiters.notify_all()

    async def get(self, task_id: str) -> Meta | None:
        self._expire(self._context.clock.time())
        record = self._store.records.get(task_id)
        if record is None or not record.states:
            return None
        return self._context.decode(record.states[-1])

    async def watch(self, task_ids: Sequence[str]) -> AsyncGenerator[Meta, None]:
        seen = dict.fromkeys(task_ids, 0)
        while True:
            waiter = self._store.waiters.new()
            for task_id in task_ids:
                record = self._store.records.get(task_id)
                if record is None or record.appended == seen[task_id]:
                    continue
                fresh = min(record.appended - seen[task_id], len(record.states))
                seen[task_id] = record.appended
                for payload in list(record.states)[len(record.states) - fresh:]:
                    yield self._context.decode(payload)
            if waiter.done():
                continue
            await wait_any(waiter, None)

    async def forget(self, task_id: str) -> None:
        self._store.records.pop(task_id, None)

    def _expire(self, now: float) -> None:
        records, expiries = self._store.records, self._store.expiries
        while expiries and expiries[0][0] <= now:
            _, task_id = heapq.heappop(expiries)
            record = records.get(task_id)
            if record is not None and record.expires_at is not None and record.expires_at <= now:
                del records[task_id]

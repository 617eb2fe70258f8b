"""In-process broker for tests and single-process apps (``memory://``).

It keeps the full contract: exact priority order, ETAs parked until due, leases that a live
consumer renews and that expire (by the app's clock) when a consumer dies without closing,
delivery counts, dead letters. State lives in the app's ``shared`` dict, so the broker
instances that one app makes on several event loops see the same queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from .._waiters import Waiters, wait_any
from ..message import Message
from .base import BrokerContext, DeadLetter, Delivery, Outgoing, Producer, Route

DEAD_LETTER_LIMIT = 10_000


@dataclass(slots=True)
class _Entry:
    message: Message
    queue: str
    seq: int
    deliveries: int = 0
    lease_until: float = 0.0
    owner: object | None = None


@dataclass(slots=True)
class _Hub:
    ready: dict[str, list[tuple[int, int, _Entry]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    parked: list[tuple[float, int, _Entry]] = field(default_factory=list)
    leased: dict[int, _Entry] = field(default_factory=dict)
    dead: dict[str, deque[DeadLetter]] = field(
        default_factory=lambda: defaultdict(lambda: deque(maxlen=DEAD_LETTER_LIMIT))
    )
    seq: itertools.count[int] = field(default_factory=itertools.count)
    waiters: Waiters = field(default_factory=Waiters)

    def push_ready(self, entry: _Entry) -> None:
        priority = entry.message.priority or 0
        heapq.heappush(self.ready[entry.queue], (-priority, entry.seq, entry))

    def park(self, entry: _Entry, when: float) -> None:
        heapq.heappush(self.parked, (when, entry.seq, entry))


class MemoryDelivery:
    __slots__ = ("_broker", "_entry", "delivery_count", "message", "queue")

    def __init__(self, broker: MemoryBroker, entry: _Entry) -> None:
        self._broker = broker
        self._entry = entry
        self.message = entry.message
        self.queue = entry.queue
        self.delivery_count = entry.deliveries

    def _settle(self) -> bool:
        return self._broker._hub.leased.pop(self._entry.seq, None) is not None

    async def ack(self) -> None:
        self._settle()

    async def release(self) -> None:
        if self._settle():
            self._entry.deliveries -= 1
            self._entry.owner = None
            self._broker._hub.push_ready(self._entry)
            self._broker._hub.waiters.notify_all()

    async def defer(self, eta: dt.datetime) -> None:
        if self._settle():
            self._entry.deliveries = 0
            self._entry.owner = None
            self._broker._hub.park(self._entry, eta.timestamp())
            self._broker._hub.waiters.notify_all()

    async def dead_letter(self, reason: str) -> None:
        if self._settle():
            self._broker._hub.dead[self.queue].append(
                DeadLetter(self.queue, reason, self.message, time=self._broker._clock.time())
            )


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, queues: Sequence[str]) -> None:
        self._broker = broker
        self._queues = list(queues)
        self._closed = False
        self._heartbeat = asyncio.create_task(self._renew_leases())

    async def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        # ``timeout`` is real time (a bound on waiting); ETAs and leases follow the app clock,
        # so a test's ManualClock.advance() wakes a fetch waiting for a parked message.
        hub = self._broker._hub
        clock = self._broker._clock
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._closed:
            self._broker._promote()
            batch = self._take(limit)
            remaining = deadline - loop.time()
            if batch or limit <= 0 or remaining <= 0:
                return batch
            waiter = hub.waiters.new()
            sleeper = (
                asyncio.ensure_future(clock.sleep_until(hub.parked[0][0]))
                if hub.parked else None
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wait_any(waiter, sleeper)
        return []

    def _take(self, limit: int) -> list[Delivery]:
        hub = self._broker._hub
        lease_until = self._broker._clock.time() + self._broker._lease_timeout
        out: list[Delivery] = []
        while len(out) < limit:
            best: tuple[int, int, _Entry] | None = None
            for queue in self._queues:
                heap = hub.ready.get(queue)
                if heap and (best is None or heap[0][:2] < best[:2]):
                    best = heap[0]
            if best is None:
                break
            entry = heapq.heappop(hub.ready[best[2].queue])[2]
            entry.deliveries += 1
            entry.lease_until = lease_until
            entry.owner = self
            hub.leased[entry.seq] = entry
            out.append(MemoryDelivery(self._broker, entry))
        return out

    async def _renew_leases(self) -> None:
        clock = self._broker._clock
        interval = self._broker._lease_timeout / 3
        while True:
            await clock.sleep(interval)
            lease_until = clock.time() + self._broker._lease_timeout
            for entry in self._broker._hub.leased.values():
                if entry.owner is self:
                    entry.lease_until = lease_until

    def abandon(self) -> None:
        """Stop renewing leases without releasing anything: what a killed worker does."""
        self._closed = True
        self._heartbeat.cancel()

    async def close(self) -> None:
        self.abandon()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        hub = self._broker._hub
        for entry in [e for e in hub.leased.values() if e.owner is self]:
            await MemoryDelivery(self._broker, entry).release()


class MemoryBroker:
    """``memory://`` broker; see the module docstring."""

    def __init__(self, context: BrokerContext) -> None:
        self._clock = context.clock
        self._settings = context.settings
        self._lease_timeout = context.settings.worker_lease_timeout
        self._hub: _Hub = context.shared.setdefault(f"memory-broker:{context.url}", _Hub())

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None:
        hub = self._hub
        entry = _Entry(message, route.queue, next(hub.seq))
        horizon = self._clock.time() + self._settings.worker_eta_horizon
        if eta is not None and eta.timestamp() > horizon:
            hub.park(entry, eta.timestamp())
        else:
            hub.push_ready(entry)
        hub.waiters.notify_all()

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        for item in items:
            await self.publish(item.message, item.route, eta=item.eta)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        yield self

    async def consumer(self, queues: Sequence[str], *, prefetch: int) -> MemoryConsumer:
        return MemoryConsumer(self, queues)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        return list(self._hub.dead[queue])[-limit:]

    async def purge(self, queue: str) -> int:
        count = len(self._hub.ready.pop(queue, []))
        kept = [item for item in self._hub.parked if item[2].queue != queue]
        count += len(self._hub.parked) - len(kept)
        heapq.heapify(kept)
        self._hub.parked = kept
        return count

    def _promote(self) -> None:
        """Move due parked entries, and expired leases, back to their ready queues."""
        hub = self._hub
        now = self._clock.time()
        while hub.parked and hub.parked[0][0] <= now:
            hub.push_ready(heapq.heappop(hub.parked)[2])
        for seq, entry in list(hub.leased.items()):
            if entry.lease_until <= now:
                del hub.leased[seq]
                entry.owner = None
                hub.push_ready(entry)

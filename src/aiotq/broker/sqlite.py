"""Embedded broker in one SQLite file (``sqlite:///aiotq.db``), shared by the worker and
producer processes of one host.

Every message is a row of ``aiotq_messages``. Its ``available_at`` says what it waits for:
NULL means ready; otherwise the row is parked until that time (an ETA, ``owner`` NULL) or
leased to the consumer named in ``owner`` until then. A due parked row and a lapsed lease
both turn ready again, so a dead consumer's messages go to the next fetch. Dead letters
live in ``aiotq_dead_letters``. All times come from the app's clock. See
docs/brokers/sqlite.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import heapq
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from .._sqlite import Database, Job, in_transaction
from ..exceptions import MessageError, TransportError
from ..message import Message, pack, unpack
from .base import BrokerContext, DeadLetter, Delivery, Outgoing, Producer, Route

logger = logging.getLogger(__name__)

#: Dead letters kept per queue; older ones are deleted.
DEAD_LETTER_LIMIT = 10_000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS aiotq_messages (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        payload BLOB NOT NULL,
        available_at REAL,
        owner TEXT,
        deliveries INTEGER NOT NULL DEFAULT 0
    )""",
    # A fetch walks this index in delivery order; parked and leased rows are not in it.
    """CREATE INDEX IF NOT EXISTS aiotq_messages_ready
        ON aiotq_messages (queue, priority DESC, id) WHERE available_at IS NULL""",
    """CREATE INDEX IF NOT EXISTS aiotq_messages_held
        ON aiotq_messages (queue, available_at) WHERE available_at IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS aiotq_messages_owner
        ON aiotq_messages (owner) WHERE owner IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS aiotq_dead_letters (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        reason TEXT NOT NULL,
        payload BLOB NOT NULL,
        time REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS aiotq_dead_letters_queue ON aiotq_dead_letters (queue, id)",
)

_Row = tuple[str, int, bytes, float | None]
#: A job settling one leased row, ``job(row_id, owner, connection)``; returns the rows it
#: changed (0 when the lease went to another consumer meanwhile).
_RowJob = Callable[[int, str, sqlite3.Connection], int]


@dataclass(frozen=True, slots=True)
class _Leased:
    id: int
    queue: str
    deliveries: int
    message: Message


@dataclass(frozen=True, slots=True)
class _Claim:
    leased: list[_Leased]
    #: The earliest time a parked or leased row of these queues becomes ready.
    next_due: float | None


# -- jobs: plain functions of a connection, run on its thread --------------------------


def _insert(rows: Sequence[_Row], conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO aiotq_messages (queue, priority, payload, available_at) VALUES (?, ?, ?, ?)",
        rows,
    )


def _survey(queues: Sequence[str], conn: sqlite3.Connection) -> tuple[bool, float | None]:
    """Whether a queue has a ready row, and when the next held one is due (read only)."""
    ready, next_due = False, None
    for queue in queues:
        has_ready, due = conn.execute(
            """SELECT EXISTS(SELECT 1 FROM aiotq_messages
                             WHERE queue = ?1 AND available_at IS NULL),
                      (SELECT MIN(available_at) FROM aiotq_messages
                       WHERE queue = ?1 AND available_at IS NOT NULL)""",
            (queue,),
        ).fetchone()
        ready = ready or bool(has_ready)
        if due is not None and (next_due is None or due < next_due):
            next_due = due
    return ready, next_due


def _claim(queues: Sequence[str], limit: int, owner: str, now: float, lease_until: float,
           conn: sqlite3.Connection) -> _Claim:
    # A read first: waking fetchers of an idle queue then never queue up for the write lock.
    ready, next_due = _survey(queues, conn)
    if limit <= 0 or not (ready or (next_due is not None and next_due <= now)):
        return _Claim([], next_due)
    job = functools.partial(_lease_best, queues, limit, owner, now, lease_until)
    return _Claim(in_transaction(job, conn), next_due)


def _lease_best(queues: Sequence[str], limit: int, owner: str, now: float, lease_until: float,
                conn: sqlite3.Connection) -> list[_Leased]:
    conn.executemany(
        """UPDATE aiotq_messages SET available_at = NULL, owner = NULL
           WHERE queue = ? AND available_at IS NOT NULL AND available_at <= ?""",
        [(queue, now) for queue in queues],
    )
    candidates = [
        row
        for queue in queues
        for row in conn.execute(
            """SELECT id, queue, priority, deliveries, payload FROM aiotq_messages
               WHERE queue = ? AND available_at IS NULL ORDER BY priority DESC, id LIMIT ?""",
            (queue, limit),
        )
    ]
    best = heapq.nsmallest(limit, candidates, key=lambda row: (-row[2], row[0]))
    conn.executemany(
        """UPDATE aiotq_messages SET available_at = ?, owner = ?, deliveries = deliveries + 1
           WHERE id = ?""",
        [(lease_until, owner, row[0]) for row in best],
    )
    leased = []
    for row_id, queue, _, deliveries, payload in best:
        try:
            leased.append(_Leased(row_id, queue, deliveries + 1, unpack(payload)))
        except MessageError as exc:
            logger.warning("dead-lettering message %d of queue %r: %s", row_id, queue, exc)
            _move_to_dead(row_id, queue, str(exc), payload, now, conn)
    return leased


def _move_to_dead(row_id: int, queue: str, reason: str, payload: bytes, now: float,
                  conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM aiotq_messages WHERE id = ?", (row_id,))
    conn.execute(
        "INSERT INTO aiotq_dead_letters (queue, reason, payload, time) VALUES (?, ?, ?, ?)",
        (queue, reason, payload, now),
    )
    conn.execute(
        """DELETE FROM aiotq_dead_letters WHERE queue = ?1 AND id <= (
               SELECT id FROM aiotq_dead_letters WHERE queue = ?1
               ORDER BY id DESC LIMIT 1 OFFSET ?2)""",
        (queue, DEAD_LETTER_LIMIT),
    )


def _ack(row_id: int, owner: str, conn: sqlite3.Connection) -> int:
    sql = "DELETE FROM aiotq_messages WHERE id = ? AND owner = ?"
    return conn.execute(sql, (row_id, owner)).rowcount


def _release(row_id: int, owner: str, conn: sqlite3.Connection) -> int:
    return conn.execute(
        """UPDATE aiotq_messages SET available_at = NULL, owner = NULL,
                  deliveries = deliveries - 1
           WHERE id = ? AND owner = ?""",
        (row_id, owner),
    ).rowcount


def _defer(eta: float, row_id: int, owner: str, conn: sqlite3.Connection) -> int:
    return conn.execute(
        """UPDATE aiotq_messages SET available_at = ?, owner = NULL, deliveries = 0
           WHERE id = ? AND owner = ?""",
        (eta, row_id, owner),
    ).rowcount


def _dead_letter(reason: str, now: float, row_id: int, owner: str, conn: sqlite3.Connection
                 ) -> int:
    row = conn.execute(
        "SELECT queue, payload FROM aiotq_messages WHERE id = ? AND owner = ?", (row_id, owner)
    ).fetchone()
    if row is None:
        return 0
    _move_to_dead(row_id, row[0], reason, row[1], now, conn)
    return 1


def _renew(owner: str, lease_until: float, conn: sqlite3.Connection) -> None:
    conn.execute(
        """UPDATE aiotq_messages SET available_at = ?
           WHERE owner = ? AND available_at IS NOT NULL""",
        (lease_until, owner),
    )


def _release_all(owner: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        """UPDATE aiotq_messages SET available_at = NULL, owner = NULL,
                  deliveries = deliveries - 1
           WHERE owner = ? AND available_at IS NOT NULL""",
        (owner,),
    )


def _dead_letters(queue: str, limit: int, conn: sqlite3.Connection
                  ) -> list[tuple[str, bytes, float]]:
    rows = conn.execute(
        """SELECT reason, payload, time FROM aiotq_dead_letters WHERE queue = ?
           ORDER BY id DESC LIMIT ?""",
        (queue, limit),
    ).fetchall()
    return rows[::-1]


def _purge(queue: str, conn: sqlite3.Connection) -> int:
    cursor = conn.execute("DELETE FROM aiotq_messages WHERE queue = ? AND owner IS NULL",
                          (queue,))
    return cursor.rowcount


def _dead_letter_of(queue: str, reason: str, payload: bytes, time: float) -> DeadLetter:
    try:
        return DeadLetter(queue, reason, unpack(payload), time=time)
    except MessageError:
        return DeadLetter(queue, reason, None, raw=payload, time=time)


# -- the asyncio side ------------------------------------------------------------------


class SQLiteDelivery:
    """A leased row. Settling it is a no-op once its lease went to another consumer."""

    __slots__ = ("_consumer", "_id", "_settled", "delivery_count", "message", "queue")

    def __init__(self, consumer: SQLiteConsumer, leased: _Leased) -> None:
        self._consumer = consumer
        self._id = leased.id
        self._settled = False
        self.message = leased.message
        self.queue = leased.queue
        self.delivery_count = leased.deliveries

    async def ack(self) -> None:
        await self._settle(_ack, notify=False)

    async def release(self) -> None:
        await self._settle(_release, notify=True)

    async def defer(self, eta: dt.datetime) -> None:
        await self._settle(functools.partial(_defer, eta.timestamp()), notify=True)

    async def dead_letter(self, reason: str) -> None:
        now = self._consumer.broker.clock.time()
        await self._settle(functools.partial(_dead_letter, reason, now), notify=False)

    async def _settle(self, job: _RowJob, *, notify: bool) -> None:
        if self._settled:
            return
        owner = self._consumer.owner
        changed = await self._consumer.broker.db.write(functools.partial(job, self._id, owner),
                                                       notify=notify)
        self._settled = True
        if not changed:
            logger.warning("message %s of queue %r was taken over after its lease lapsed; "
                           "it may run twice", self.message.task_id, self.queue)


class SQLiteConsumer:
    """Fetches from ``queues`` and keeps its leases alive until closed."""

    def __init__(self, broker: SQLiteBroker, queues: Sequence[str]) -> None:
        self.broker = broker
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._queues = tuple(dict.fromkeys(queues))
        self._closed = False
        self._heartbeat = asyncio.create_task(self._renew_leases())

    async def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        # ``timeout`` is real time (a bound on waiting); ETAs and leases follow the app clock,
        # so a test's ManualClock.advance() wakes a fetch waiting for a parked message. Rows
        # leased by a claim whose fetch was cancelled stay this consumer's until close().
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._closed:
            mark, claim = await self.broker.db.observe(self._claim_job(limit))
            remaining = deadline - loop.time()
            if claim.leased or limit <= 0 or remaining <= 0:
                return [SQLiteDelivery(self, leased) for leased in claim.leased]
            await self.broker.db.wait(mark, remaining, self._sleep_until(claim.next_due))
        return []

    def _claim_job(self, limit: int) -> Job[_Claim]:
        now = self.broker.clock.time()
        lease_until = now + self.broker.lease_timeout
        return functools.partial(_claim, self._queues, limit, self.owner, now, lease_until)

    def _sleep_until(self, when: float | None) -> asyncio.Future[None] | None:
        if when is None:
            return None
        clock = self.broker.clock
        return asyncio.ensure_future(clock.sleep(when - clock.time()))

    async def _renew_leases(self) -> None:
        clock = self.broker.clock
        lease_timeout = self.broker.lease_timeout
        while True:
            await clock.sleep(lease_timeout / 3)
            job = functools.partial(_renew, self.owner, clock.time() + lease_timeout)
            try:
                await self.broker.db.write(job, notify=False)
            except TransportError as exc:
                logger.warning("cannot renew the leases of consumer %s: %s", self.owner, exc)

    async def close(self) -> None:
        """Stop renewing leases and give back every delivery not settled yet."""
        self._closed = True
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        self.broker.forget_consumer(self)
        await self.broker.db.write(functools.partial(_release_all, self.owner))


class SQLiteBroker:
    """``sqlite:///path.db`` broker: durable, shared by the processes of one host.

    One instance belongs to one event loop and owns one connection (on its own thread).
    """

    def __init__(self, context: BrokerContext) -> None:
        self.clock = context.clock
        self.lease_timeout = context.settings.worker_lease_timeout
        self._eta_horizon = context.settings.worker_eta_horizon
        self.db = Database(context.url, context.shared, "broker", SCHEMA)
        self._consumers: set[SQLiteConsumer] = set()

    async def connect(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        try:
            for consumer in list(self._consumers):
                await consumer.close()
        finally:
            await self.db.close()

    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None:
        await self.publish_many([Outgoing(message, route, eta)])

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Publish ``items`` in one transaction: all of them or none."""
        if items:
            await self.db.write(functools.partial(_insert, [self._row(item) for item in items]))

    def _row(self, item: Outgoing) -> _Row:
        priority = min(max(item.message.priority or 0, 0), 255)
        parked_until = None
        if item.eta is not None and item.eta.timestamp() > self.clock.time() + self._eta_horizon:
            parked_until = item.eta.timestamp()
        return item.route.queue, priority, pack(item.message), parked_until

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        await self.connect()
        yield self

    async def consumer(self, queues: Sequence[str], *, prefetch: int) -> SQLiteConsumer:
        await self.connect()
        consumer = SQLiteConsumer(self, queues)
        self._consumers.add(consumer)
        return consumer

    def forget_consumer(self, consumer: SQLiteConsumer) -> None:
        self._consumers.discard(consumer)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        rows = await self.db.run(functools.partial(_dead_letters, queue, limit))
        return [_dead_letter_of(queue, reason, payload, time) for reason, payload, time in rows]

    async def purge(self, queue: str) -> int:
        """Remove the ready and parked messages of ``queue`` (leased ones stay with their
        consumers); return how many."""
        return await self.db.write(functools.partial(_purge, queue), notify=False)

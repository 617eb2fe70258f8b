"""Redis Streams broker (``redis://``, ``rediss://``); the user guide is docs/brokers/redis.md.

Keys of queue ``Q`` (all with the hash tag ``{Q}``, under the ``key_prefix``, ``aiotq``):

* ``aiotq:{Q}:p<N>``: one stream per priority lane, ``N`` the lane's lowest priority. Every
  entry holds the packed message (``m``) and, after a release, how often it was delivered
  before (``n``). Workers read them as the consumer group ``aiotq``, highest lane first.
* ``aiotq:{Q}:eta``: far ETAs, a sorted set scored by due time, moved into the lanes by
  the consumers' fetch script when due.
* ``aiotq:{Q}:dead``: dead letters, a capped stream of reason, time and raw frame.

A fetched entry stays in the group's pending list, leased to its consumer, which renews the
lease by re-claiming it every third of ``worker_lease_timeout``; entries idle longer (their
consumer died) are taken over with XAUTOCLAIM. Acked entries are deleted, so a lane holds
only what waits or runs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import logging
import os
import secrets
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .. import _redis
from .._batching import Batcher
from ..exceptions import ImproperlyConfigured, MessageError, TransportError
from ..message import Message, pack, unpack
from .base import BrokerContext, DeadLetter, Delivery, Outgoing, Producer, Route

logger = logging.getLogger("aiotq.broker.redis")

#: Lowest priority of each lane: 0 | 1-3 | 4-6 | 7-9 (Celery's 0-9 scale) | 10-63 | 64-127 |
#: 128-191 | 192-223 | 224-255.
DEFAULT_PRIORITY_STEPS = (0, 1, 4, 7, 10, 64, 128, 192, 224)
GROUP = "aiotq"
DEAD_LETTER_LIMIT = 10_000
#: Most due ETAs one fetch moves per queue; the next fetch moves more at once.
PROMOTE_LIMIT = 1000
#: Most ids one ack script call takes (Lua's unpack() has a limit).
ACK_CHUNK = 1000

SCRIPTS = _redis.Scripts(__package__ or "aiotq.broker", "redis_scripts",
                         ("fetch", "renew", "ack", "settle", "purge", "publish"))


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue."""

    queue: str
    schedule: str
    dead: str
    #: Lane streams, lowest priority first.
    lanes: tuple[str, ...]


class Layout:
    """Key names and the priority-to-lane mapping, from ``broker_transport_options``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.prefix = str(options.get("key_prefix", "aiotq"))
        self.steps = _priority_steps(options.get("priority_steps", DEFAULT_PRIORITY_STEPS))
        self.dead_letter_limit = int(options.get("dead_letter_limit", DEAD_LETTER_LIMIT))
        self._keys: dict[str, QueueKeys] = {}

    def lane(self, priority: int | None) -> int:
        return bisect.bisect_right(self.steps, min(max(priority or 0, 0), 255)) - 1

    def keys(self, queue: str) -> QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            base = f"{self.prefix}:{{{queue}}}"
            keys = QueueKeys(queue, f"{base}:eta", f"{base}:dead",
                             tuple(f"{base}:p{step}" for step in self.steps))
            self._keys[queue] = keys
        return keys


def _priority_steps(value: Any) -> tuple[int, ...]:
    steps = tuple(int(step) for step in value)
    if (not steps or steps[0] != 0 or steps[-1] > 255
            or any(a >= b for a, b in itertools.pairwise(steps))):
        raise ImproperlyConfigured(
            f"priority_steps must rise strictly from 0 to at most 255, not {value!r}"
        )
    return steps


def _schedule_member(lane: int, frame: bytes) -> bytes:
    """A sorted-set member: the lane, a token keeping equal frames apart, the frame."""
    return b"%03d%s" % (lane, secrets.token_hex(8).encode()) + frame


class RedisDelivery:
    """One fetched stream entry, leased to its consumer until settled."""

    __slots__ = ("_consumer", "_id", "_key", "_lane", "delivery_count", "message", "queue")

    def __init__(self, consumer: RedisConsumer, key: str, entry_id: bytes, lane: int,
                 message: Message, queue: str, delivery_count: int) -> None:
        self._consumer = consumer
        self._key = key
        self._id = entry_id
        self._lane = lane
        self.message = message
        self.queue = queue
        self.delivery_count = delivery_count

    async def ack(self) -> None:
        await self._consumer._ack(self)

    async def release(self) -> None:
        await self._consumer._settle(self, "release", self._key, self.delivery_count - 1)

    async def defer(self, eta: dt.datetime) -> None:
        schedule = self._consumer._broker.layout.keys(self.queue).schedule
        await self._consumer._settle(self, "defer", schedule, _redis.text(eta.timestamp()),
                                     _schedule_member(self._lane, b""))

    async def dead_letter(self, reason: str) -> None:
        await self._consumer._bury(self._key, self._id, self.queue, reason, held=True)


class RedisConsumer:
    """One member of the queues' consumer group: fetches, and renews its leases."""

    def __init__(self, broker: RedisBroker, queues: Sequence[str]) -> None:
        self._broker = broker
        self._queues = [broker.layout.keys(queue) for queue in dict.fromkeys(queues)]
        self._keys: list[str] = []
        #: Script key index (1-based) -> (queue, lane); the schedule keys map to nothing.
        self._lane_of: dict[int, tuple[QueueKeys, int]] = {}
        for queue in self._queues:
            self._keys.append(queue.schedule)
            for lane, key in enumerate(queue.lanes):
                self._keys.append(key)
                self._lane_of[len(self._keys)] = (queue, lane)
        self._lane_keys = [key for queue in self._queues for key in queue.lanes]
        self._index_of = {key.encode(): index for index, (queue, lane) in self._lane_of.items()
                          for key in (queue.lanes[lane],)}
        #: Entries a blocking read claimed beyond the limit asked for; the next fetch's.
        self._spare: list[Delivery] = []
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: dict[tuple[str, bytes], RedisDelivery] = {}
        self._cursors: list[Any] = [b"0-0"] * len(self._lane_keys)
        self._lease = broker.settings.worker_lease_timeout
        self._next_claim = 0.0
        #: From the last fetch script: the earliest parked ETA, and when to run it again
        #: at the latest (a publisher may have parked an earlier one meanwhile).
        self._next_due: float | None = None
        self._poll_by = 0.0
        #: Whether the last blocking read found entries: more may be streaming in.
        self._read_found = False
        self._closed = False
        self._acks: Batcher[tuple[str, bytes], None] = Batcher(self._flush_acks)
        self._heartbeat = asyncio.create_task(self._renew_leases())

    # -- fetching --

    async def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        failures = 0
        if self._spare:
            batch, self._spare = self._spare[:limit], self._spare[limit:]
            return batch
        while not self._closed and limit > 0:
            try:
                if not self._streaming(loop.time()):
                    batch, tails = await self._poll(limit)
                    if batch:
                        return batch
                    if not tails:
                        continue  # the poll found only garbage, which it buried: again
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                batch = await self._wait(remaining, limit)
                if batch:
                    batch, self._spare = batch[:limit], batch[limit:]
                    return batch
                failures = 0
            except TransportError:
                failures += 1
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise
                await asyncio.sleep(min(0.05 * 2 ** failures, 1.0, remaining))
        return []

    def _streaming(self, now: float) -> bool:
        """Whether the fetch script has nothing to add to a blocking read: the last read
        found entries (new ones come in), and no lease claim, ETA or periodic poll is due.

        A steady stream of single tasks then costs one blocking read each, not a script
        run ahead of every task's result.
        """
        return (self._read_found and now < self._poll_by and now < self._next_claim
                and (self._next_due is None or self._next_due > self._broker.clock.time()))

    async def _poll(self, limit: int) -> tuple[list[Delivery], list[bytes]]:
        """Run the fetch script once: deliveries, else the tails (whether to block)."""
        broker = self._broker
        now = asyncio.get_running_loop().time()
        self._read_found = False
        self._poll_by = now + _redis.MAX_BLOCK
        claim_ms = 0
        if now >= self._next_claim:
            claim_ms = int(self._lease * 1000)
            self._next_claim = now + self._lease / 2
        args = [GROUP, self._name, limit, _redis.text(broker.clock.time()),
                len(broker.layout.steps), claim_ms, PROMOTE_LIMIT, *self._cursors]
        with _redis.transport_errors("fetch"):
            entries, next_due, tails, cursors = await SCRIPTS.run(
                _redis.command(broker.client), "fetch", self._keys, args
            )
        if cursors:
            self._cursors = cursors
        self._next_due = float(next_due) if next_due is not None else None
        return await self._deliveries(entries), tails

    async def _deliveries(self, entries: list[Any]) -> list[Delivery]:
        batch: list[Delivery] = []
        garbage: list[tuple[str, bytes, str, str]] = []
        for i in range(0, len(entries), 4):
            index, entry_id, fields, times = entries[i:i + 4]
            queue, lane = self._lane_of[index]
            key = queue.lanes[lane]
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            try:
                message = unpack(values[b"m"])
                count = int(times) + int(values.get(b"n", 0))
            except (KeyError, ValueError, MessageError) as exc:
                garbage.append((key, entry_id, queue.queue, f"undecodable stream entry: {exc!r}"))
                continue
            delivery = RedisDelivery(self, key, entry_id, lane, message, queue.queue, count)
            self._held[key, entry_id] = delivery
            batch.append(delivery)
        for key, entry_id, queue_name, reason in garbage:
            logger.warning("dead-lettering entry %s of queue %r: %s", entry_id.decode(),
                           queue_name, reason)
            try:
                await self._bury(key, entry_id, queue_name, reason, held=False)
            except TransportError:
                pass  # not renewed: it comes back after the lease timeout, for another try
        return batch

    async def _wait(self, remaining: float, limit: int) -> list[Delivery]:
        """Block until a lane gets new entries (claimed by this very read, up to ``limit``
        per lane), an ETA may be due, or the time is up."""
        self._read_found = False
        seconds = min(remaining, _redis.MAX_BLOCK)
        if self._next_due is not None:
            seconds = min(seconds, self._next_due - self._broker.clock.time())
        if seconds <= 0:
            return []
        client = self._broker.client
        try:
            with _redis.transport_errors("fetch"):
                reply = await _redis.command(client)(
                    "XREADGROUP", "GROUP", GROUP, self._name, "COUNT", limit, "BLOCK",
                    _redis.block_ms(client, seconds), "STREAMS", *self._lane_keys,
                    *[">"] * len(self._lane_keys),
                )
        except TransportError as exc:
            if "NOGROUP" in str(exc):
                return []  # Redis lost the group (a restart): the next poll recreates it
            raise
        self._read_found = bool(reply)
        return await self._deliveries(self._entries(reply or []))

    def _entries(self, reply: list[Any]) -> list[Any]:
        """A blocking read's reply in the fetch script's shape, highest lane first."""
        found = []
        for key, items in reply:
            index = self._index_of[key]
            for entry_id, values in items:
                fields = [item for pair in (values or {}).items() for item in pair]
                found.append((-self._lane_of[index][1], index, entry_id, fields))
        found.sort(key=lambda entry: entry[0])
        return [value for _, index, entry_id, fields in found
                for value in (index, entry_id, fields, 1)]

    # -- leases --

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self._renew()
            except TransportError as exc:
                logger.warning("renewing leases of consumer %s failed: %s", self._name, exc)

    async def _renew(self) -> None:
        by_key: dict[str, list[bytes]] = defaultdict(list)
        for key, entry_id in self._held:
            by_key[key].append(entry_id)
        if not by_key:
            return
        call = self._broker.pipeliner.call
        with _redis.transport_errors("lease renewal"):
            replies = await asyncio.gather(*(
                SCRIPTS.run(call, "renew", [key], [GROUP, self._name, *ids])
                for key, ids in by_key.items()
            ))
        lost = 0
        for key, ids in zip(by_key, replies, strict=True):
            for entry_id in ids:
                # Not held any more: settled while the renewal ran, so not lost.
                if self._held.pop((key, entry_id), None) is not None:
                    lost += 1
        if lost:
            logger.warning("consumer %s lost the lease of %d message(s) to another consumer",
                           self._name, lost)

    # -- settling --

    async def _ack(self, delivery: RedisDelivery) -> None:
        if self._held.pop((delivery._key, delivery._id), None) is None:
            return
        with _redis.transport_errors("ack"):
            await self._acks.submit((delivery._key, delivery._id))

    async def _flush_acks(self, acks: list[tuple[str, bytes]]) -> list[Exception | None]:
        """One script call per lane for all the acks that came in together."""
        by_key: dict[str, list[bytes]] = defaultdict(list)
        for key, entry_id in acks:
            by_key[key].append(entry_id)
        # Batched already: sent straight away, not batched again by the pipeliner.
        call = _redis.command(self._broker.client)
        await asyncio.gather(*(
            SCRIPTS.run(call, "ack", [key], [GROUP, *ids[i:i + ACK_CHUNK]])
            for key, ids in by_key.items() for i in range(0, len(ids), ACK_CHUNK)
        ))
        return [None] * len(acks)

    async def _settle(self, delivery: RedisDelivery, action: str, target: str,
                      *extra: Any) -> None:
        if self._held.pop((delivery._key, delivery._id), None) is None:
            return
        with _redis.transport_errors(action):
            await SCRIPTS.run(self._broker.pipeliner.call, "settle", [delivery._key, target],
                              [GROUP, self._name, delivery._id, action, *extra])

    async def _bury(self, key: str, entry_id: bytes, queue: str, reason: str, *,
                    held: bool) -> None:
        if held and self._held.pop((key, entry_id), None) is None:
            return
        broker = self._broker
        with _redis.transport_errors("dead-lettering"):
            await SCRIPTS.run(
                broker.pipeliner.call, "settle", [key, broker.layout.keys(queue).dead],
                [GROUP, self._name, entry_id, "dead", reason, _redis.text(broker.clock.time()),
                 broker.layout.dead_letter_limit],
            )

    # -- closing --

    def abandon(self) -> None:
        """Stop renewing leases without releasing anything: what a killed worker does."""
        self._closed = True
        self._heartbeat.cancel()

    async def close(self) -> None:
        self.abandon()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        await self._acks.close()
        held = list(self._held.values())
        results = await asyncio.gather(*(d.release() for d in held), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("consumer %s could not release %d message(s) (%s); they are "
                           "redelivered after the lease timeout", self._name, len(failed),
                           failed[0])


class RedisBroker:
    """``redis://`` / ``rediss://`` broker on Redis Streams; see the module docstring.

    ``broker_transport_options``: ``priority_steps`` (lowest priority of each lane, default
    :data:`DEFAULT_PRIORITY_STEPS`), ``key_prefix`` (``"aiotq"``), ``dead_letter_limit``
    (dead letters kept per queue, ``10000``). Query-string options of the URL go to
    redis-py (``socket_timeout``, ``max_connections``, ``ssl_cert_reqs``, ...).
    """

    def __init__(self, context: BrokerContext) -> None:
        self.settings = context.settings
        self.clock = context.clock
        self.layout = Layout(context.settings.broker_transport_options)
        self._link = _redis.Link(context.url)
        # Concurrent publishes (a gather of delay() calls) travel as one script call; a
        # lone one goes out at once, from its caller's task (its round trip starts sooner).
        self._publishes: Batcher[tuple[str, str, str, bytes], None] = (
            Batcher(self._publish_batch, eager=True)
        )

    @property
    def client(self) -> Redis:
        return self._link.client

    @property
    def pipeliner(self) -> _redis.Pipeliner:
        return self._link.pipeliner

    async def connect(self) -> None:
        await self._link.ping()

    async def close(self) -> None:
        await self._publishes.close()
        await self._link.close()

    # -- publishing --

    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None:
        await self._publishes.submit(self._command(message, route.queue, eta))

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        await self._publish_batch(
            [self._command(item.message, item.route.queue, item.eta) for item in items]
        )

    async def _publish_batch(self, commands: list[tuple[str, str, str, bytes]]
                             ) -> list[Exception | None]:
        keys = [key for key, _, _, _ in commands]
        args = [value for _, kind, score, payload in commands for value in (kind, score, payload)]
        with _redis.transport_errors("publish"):
            await SCRIPTS.run(_redis.command(self.client), "publish", keys, args)
        return [None] * len(commands)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        # Every publish already shares pipelines with concurrent ones: no connection to pin.
        yield self

    def _command(self, message: Message, queue: str, eta: dt.datetime | None
                 ) -> tuple[str, str, str, bytes]:
        """(target key, "x" or "z", ETA score, payload) for publish.lua."""
        keys = self.layout.keys(queue)
        lane = self.layout.lane(message.priority)
        frame = pack(message)
        if eta is not None and eta.timestamp() > (
            self.clock.time() + self.settings.worker_eta_horizon
        ):
            return (keys.schedule, "z", _redis.text(eta.timestamp()),
                    _schedule_member(lane, frame))
        return (keys.lanes[lane], "x", "", frame)

    # -- consuming and inspecting --

    async def consumer(self, queues: Sequence[str], *, prefetch: int) -> RedisConsumer:
        return RedisConsumer(self, queues)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with _redis.transport_errors("reading dead letters"):
            entries = await _redis.command(self.client)(
                "XREVRANGE", self.layout.keys(queue).dead, "+", "-", "COUNT", limit
            )
        return [_dead_letter(queue, fields) for _, fields in reversed(entries)]

    async def purge(self, queue: str) -> int:
        keys = self.layout.keys(queue)
        with _redis.transport_errors("purge"):
            removed = await SCRIPTS.run(_redis.command(self.client), "purge",
                                        [keys.schedule, *keys.lanes], [GROUP])
        return int(removed)


def _dead_letter(queue: str, fields: dict[bytes, bytes]) -> DeadLetter:
    raw = fields.get(b"raw", b"")
    try:
        message: Message | None = unpack(raw)
    except MessageError:
        message = None
    return DeadLetter(queue, fields.get(b"reason", b"").decode(errors="replace"), message,
                      raw, float(fields.get(b"time", 0)))

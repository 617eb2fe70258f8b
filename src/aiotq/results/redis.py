"""Redis result backend (``redis://``, ``rediss://``); see docs/brokers/redis.md.

Per task, two keys expiring together after ``result_expires`` (ms precision):

* ``celery-task-meta-<id>``: the newest meta, serialized with ``result_serializer``, and
  published on the channel of the same name, exactly as Celery's Redis backend does, so
  Celery clients read aiotq's results and ``get`` reads Celery's.
* ``aiotq:states:<id>``: the state history, a stream capped at ``result_state_history``.

``watch`` replays and then follows the state streams. Every watch of one backend shares one
``XREAD BLOCK`` over all watched streams (one connection, one round trip per batch of
updates), so a thousand concurrent ``get()`` calls need no thousand connections.

A Celery worker's results have no stream (Celery's backend only SETs and PUBLISHes the meta
key), so every watch also subscribes to the meta channels of its tasks, on one shared
SUBSCRIBE connection, and takes from them the states of tasks that have no stream.
Metas are stored and read in Celery's shape (:func:`~aiotq.message.meta_to_celery`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .. import _redis
from .._batching import Batcher
from ..message import meta_from_celery, meta_to_celery
from ..states import READY_STATES
from .base import BackendContext, Meta

logger = logging.getLogger("aiotq.results.redis")

META_PREFIX = "celery-task-meta-"
STATES_PREFIX = "aiotq:states:"
#: Longest a feed's XREAD blocks; nothing needs it to wake sooner (joins wake it).
FEED_BLOCK = 5.0
#: A wake stream nobody reads for this long (a crashed process's) expires.
WAKE_TTL_MS = 60_000

SCRIPTS = _redis.Scripts(__package__ or "aiotq.results", "redis_scripts",
                         ("store", "foreign"))
#: The state stream that hasn't been read from yet.
UNREAD = b"0-0"


def _meta_key(task_id: str) -> bytes:
    return f"{META_PREFIX}{task_id}".encode()


def _states_key(task_id: str) -> bytes:
    return f"{STATES_PREFIX}{task_id}".encode()


def _channel_of(states_key: bytes) -> bytes:
    return META_PREFIX.encode() + states_key.removeprefix(STATES_PREFIX.encode())


def _states_of(channel: bytes) -> bytes:
    return STATES_PREFIX.encode() + channel.removeprefix(META_PREFIX.encode())


@dataclass(eq=False, slots=True)
class _Watch:
    """One ``watch()`` call: where it is in each stream, and what arrived for it."""

    positions: dict[bytes, bytes]
    arrived: asyncio.Queue[tuple[bytes, bytes]] = field(default_factory=asyncio.Queue)


class _Feed:
    """Reads every watched state stream of one backend in a single blocking loop."""

    def __init__(self, client: Redis, follow_celery: bool) -> None:
        self._client = client
        self._by_key: dict[bytes, set[_Watch]] = defaultdict(set)
        self._wake_key = f"aiotq:feed:{secrets.token_hex(8)}".encode()
        self._wake_position = b"0-0"
        self._blocked = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        #: The blocking read's own connection, kept from one loop to the next (a client
        #: per loop costs more than the read).
        self._reader: Redis | None = None
        self._wakes: set[asyncio.Task[None]] = set()
        # Off by default: following Celery's channels costs a subscription per watched task.
        self.foreign = _Foreign(client, self._by_key) if follow_celery else None

    def join(self, keys: Sequence[bytes]) -> _Watch:
        watch = _Watch(dict.fromkeys(keys, UNREAD))
        for key in watch.positions:
            self._by_key[key].add(watch)
        if self.foreign is not None:
            self.foreign.follow(keys)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        elif self._blocked:
            self._blocked = False
            self._spawn_wake()
        return watch

    def drop(self, watch: _Watch, key: bytes) -> None:
        """Stop reading ``key`` for ``watch`` (its task is ready: nothing more comes)."""
        watchers = self._by_key.get(key)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._by_key[key]
                if self.foreign is not None:
                    self.foreign.release(key)
        watch.positions.pop(key, None)

    def leave(self, watch: _Watch) -> None:
        for key in list(watch.positions):
            self.drop(watch, key)

    async def close(self) -> None:
        # Not cancelled: redis-py does not let go of a blocking read when its task is
        # cancelled, and a loop that is only woken may start the next read first. Told to
        # stop, then woken, the loop ends at its next check.
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            await self._wake()
            await task
        for wake in list(self._wakes):
            wake.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wake
        if self.foreign is not None:
            await self.foreign.close()
        if self._reader is not None:
            await self._reader.aclose()
            self._reader = None
        with contextlib.suppress(RedisError):
            await _redis.command(self._client)("DEL", self._wake_key)

    def _spawn_wake(self) -> None:
        task = asyncio.create_task(self._wake())
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _wake(self) -> None:
        """End the running XREAD early, so it restarts with the keys that just joined."""
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("XADD", self._wake_key, "MAXLEN", 1, "*", "w", 1)
        pipe.execute_command("PEXPIRE", self._wake_key, WAKE_TTL_MS)
        try:
            await pipe.execute()
        except RedisError as exc:
            logger.debug("waking the state feed failed: %s", exc)

    async def _run(self) -> None:
        if self._reader is None:
            self._reader = self._client.client()
        reader = self._reader
        failures = 0
        while True:
            if not self._by_key or self._closing:
                # Decided without awaiting, so a join from now on starts a new loop.
                self._task = None
                return
            try:
                reply = await self._read(reader)
                failures = 0
            except RedisError as exc:
                failures += 1
                logger.warning("reading task states failed (%s); retrying", exc)
                await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            for key, entries in reply or ():
                self._dispatch(key, entries)
            if reply:
                # The watches woken take what arrived, and drop the keys of ready tasks,
                # before the next read is decided: no read is started (and later woken)
                # for keys nobody waits on any more.
                await asyncio.sleep(0)

    async def _read(self, reader: Redis) -> Any:
        keys = [*self._by_key, self._wake_key]
        positions = [min((w.positions[key] for w in self._by_key[key]), key=_redis.stream_id)
                     for key in self._by_key]
        self._blocked = True
        try:
            return await _redis.command(reader)(
                "XREAD", "COUNT", 1000, "BLOCK", _redis.block_ms(self._client, FEED_BLOCK),
                "STREAMS", *keys, *positions, self._wake_position,
            )
        finally:
            self._blocked = False

    def _dispatch(self, key: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if key == self._wake_key:
            self._wake_position = entries[-1][0]
            return
        for watch in list(self._by_key.get(key, ())):
            position = _redis.stream_id(watch.positions[key])
            for entry_id, fields in entries:
                payload = fields.get(b"s")
                if payload is not None and _redis.stream_id(entry_id) > position:
                    watch.arrived.put_nowait((key, payload))
                    watch.positions[key] = entry_id


class _Foreign:
    """Follows the states Celery workers store for the watched tasks.

    Celery's Redis backend SETs ``celery-task-meta-<id>`` and PUBLISHes the meta on the
    channel of that name; it writes no state stream. One SUBSCRIBE connection follows the
    channels of every watched task (subscribed and unsubscribed in batches). Once a
    subscription is confirmed (at first, and again after a reconnection) foreign.lua tells
    whether the task has a stream, and returns the meta stored before: a task with a stream
    is aiotq's, and its states, published too, reach the watches through the stream alone,
    exactly once and in order. Without one, the stored meta and every published one go to
    the watches that have read nothing from the stream.
    """

    def __init__(self, client: Redis, by_key: dict[bytes, set[_Watch]]) -> None:
        self._client = client
        self._by_key = by_key
        self._pubsub: PubSub | None = None
        #: Channels wanted; those to SUBSCRIBE to and maybe UNSUBSCRIBE from, not sent yet.
        self._channels: set[bytes] = set()
        self._added: set[bytes] = set()
        self._released: set[bytes] = set()
        #: Subscriptions may differ from ``_channels`` (after a connection error).
        self._stale = False
        #: Per state stream key, once known: whether the task's states are Celery's.
        self._celerys: dict[bytes, bool] = {}
        #: The last payload passed on per task: a meta read at subscription time is also
        #: published, once, when it was stored after the subscription.
        self._last: dict[bytes, bytes] = {}
        #: Subscription confirmations and published states (None, payload) to check.
        self._unchecked: list[tuple[bytes, bytes | None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._closed = False

    def follow(self, keys: Sequence[bytes]) -> None:
        """Subscribe, soon, to the channels of these state streams' tasks."""
        channels = {_channel_of(key) for key in keys} - self._channels
        if channels:
            self._channels |= channels
            self._added |= channels
            self._sync_soon()

    def release(self, key: bytes) -> None:
        """Nobody watches the task of ``key`` any more: unsubscribe, soon."""
        self._released.add(_channel_of(key))
        self._sync_soon()

    async def close(self) -> None:
        self._closed = True
        for task in (self._listener, self._syncing, self._checker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pubsub is not None:
            # redis-py leaves PubSub.aclose unannotated.
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    # -- subscriptions --

    def _sync_soon(self) -> None:
        if self._closed:
            return  # a watch that outlived the backend has nothing to unsubscribe from
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._sync())

    async def _sync(self) -> None:
        """Send what follow() and release() asked for meanwhile, a command for each kind."""
        if self._pubsub is None:
            self._pubsub = self._client.pubsub()
        pubsub = self._pubsub
        while self._added or self._released:
            # A task watched again meanwhile stays subscribed.
            gone = {c for c in self._released if _states_of(c) not in self._by_key}
            self._released.clear()
            self._channels -= gone
            for channel in gone:
                self._celerys.pop(_states_of(channel), None)
                self._last.pop(_states_of(channel), None)
            added, self._added = self._added & self._channels, set()
            try:
                if added:
                    await pubsub.subscribe(*added)
                if gone:
                    await pubsub.unsubscribe(*gone)
            except RedisError as exc:
                self._stale = True  # the listener catches up once Redis answers
                logger.warning("subscribing to task states failed (%s); retrying", exc)
            if self._channels and (self._listener is None or self._listener.done()):
                self._listener = asyncio.create_task(self._listen(pubsub))

    async def _listen(self, pubsub: PubSub) -> None:
        failures = 0
        while True:
            if not self._channels:
                # Decided without awaiting, so a subscription from now on starts a new loop.
                self._listener = None
                return
            try:
                if self._stale:
                    self._stale = False
                    await self._resubscribe(pubsub)
                message = await pubsub.get_message(timeout=FEED_BLOCK)
                failures = 0
            except RedisError as exc:
                failures += 1
                self._stale = True
                logger.warning("following task states failed (%s); retrying", exc)
                await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            if message is not None:
                self._take(message)

    async def _resubscribe(self, pubsub: PubSub) -> None:
        """Make the subscriptions match ``_channels`` again."""
        subscribed = set(pubsub.channels)
        missing, extra = self._channels - subscribed, subscribed - self._channels
        if missing:
            await pubsub.subscribe(*missing)
        if extra:
            await pubsub.unsubscribe(*extra)

    # -- states --

    def _take(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("subscribe", "message"):
            return
        key = _states_of(message["channel"])
        celerys = self._celerys.get(key)
        if celerys is False or not self._unread(key):
            return
        published = message["data"] if kind == "message" else None
        if celerys and published is not None:
            self._pass(key, published)
            return
        self._unchecked.append((key, published))
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check())

    async def _check(self) -> None:
        """Tell, for every task taken meanwhile, whether it is Celery's (one script call),
        and pass on its states if so, in the order they came."""
        failures = 0
        while self._unchecked:
            batch, self._unchecked = self._unchecked, []
            keys: list[bytes] = []
            for key, _ in batch:
                keys += (_channel_of(key), key)
            try:
                found = await SCRIPTS.run(_redis.command(self._client), "foreign", keys, [])
                failures = 0
            except RedisError as exc:
                self._unchecked = batch + self._unchecked
                failures += 1
                logger.warning("reading task states failed (%s); retrying", exc)
                await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            for (key, published), (has_stream, stored) in zip(batch, found, strict=True):
                if has_stream:
                    self._celerys[key] = False
                elif published is not None or stored is not None:
                    self._celerys[key] = True
                    self._pass(key, published if published is not None else stored)

    def _pass(self, key: bytes, payload: bytes) -> None:
        if self._last.get(key) == payload:
            return
        self._last[key] = payload
        for watch in self._by_key.get(key, ()):
            if watch.positions.get(key) == UNREAD:
                watch.arrived.put_nowait((key, payload))

    def _unread(self, key: bytes) -> bool:
        """Whether a watch of ``key`` has read nothing from its stream yet."""
        return any(w.positions.get(key) == UNREAD for w in self._by_key.get(key, ()))


class RedisBackend:
    """``redis://`` / ``rediss://`` result backend; see the module docstring."""

    def __init__(self, context: BackendContext) -> None:
        self._context = context
        self._link = _redis.Link(context.url)
        self._feed: _Feed | None = None
        # Eager: a worker's lone store goes out before the worker's next fetch.
        self._stores: Batcher[tuple[str, bytes], None] = Batcher(self._store_batch, eager=True)

    @property
    def client(self) -> Redis:
        return self._link.client

    async def connect(self) -> None:
        await self._link.ping()

    async def close(self) -> None:
        await self._stores.close()
        if self._feed is not None:
            await self._feed.close()
            self._feed = None
        await self._link.close()

    async def on_task_call(self, task_id: str) -> str | None:
        return None

    async def store(self, meta: Meta, *, reply_to: str | None = None) -> None:
        with _redis.transport_errors("storing a result"):
            await self._stores.submit((str(meta["task_id"]),
                                       self._context.encode(meta_to_celery(meta))))

    async def _store_batch(self, items: list[tuple[str, bytes]]) -> list[Exception | None]:
        settings = self._context.settings
        ttl_ms = int(settings.result_expires * 1000) if settings.result_expires else 0
        keys: list[bytes] = []
        for task_id, _ in items:
            keys += (_meta_key(task_id), _states_key(task_id))
        with _redis.transport_errors("storing results"):
            await SCRIPTS.run(_redis.command(self.client), "store", keys,
                              [ttl_ms, settings.result_state_history,
                               *(payload for _, payload in items)])
        return [None] * len(items)

    async def get(self, task_id: str) -> Meta | None:
        with _redis.transport_errors("reading a result"):
            payload = await _redis.command(self.client)("GET", _meta_key(task_id))
        return None if payload is None else meta_from_celery(self._context.decode(payload))

    async def watch(self, task_ids: Sequence[str]) -> AsyncGenerator[Meta, None]:
        if self._feed is None:
            options = self._context.settings.result_backend_transport_options
            self._feed = _Feed(self.client, bool(options.get("follow_celery_results")))
        feed = self._feed
        watch = feed.join([_states_key(task_id) for task_id in dict.fromkeys(task_ids)])
        try:
            while True:
                key, payload = await watch.arrived.get()
                if key not in watch.positions:
                    continue  # a task that was ready already (a Celery state published late)
                meta = meta_from_celery(self._context.decode(payload))
                if meta.get("status") in READY_STATES:
                    feed.drop(watch, key)
                yield meta
        finally:
            feed.leave(watch)

    async def forget(self, task_id: str) -> None:
        with _redis.transport_errors("forgetting a result"):
            await _redis.command(self.client)("DEL", _meta_key(task_id), _states_key(task_id))

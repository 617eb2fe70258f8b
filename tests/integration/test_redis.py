"""What only the Redis broker and backend promise: far ETAs parked in a sorted set, garbage
entries dead-lettered, bounded streams, leases renewed by a live consumer and taken over
from a dead one, recovery from a restarted server, and Celery's result keys.

Tests against the shared server use unique queues and delete their keys; the restart test
runs its own redis-server on a free port."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from aiotq.broker.base import BrokerContext, Delivery, Outgoing, Route
from aiotq.broker.redis import Layout, RedisBroker, RedisConsumer
from aiotq.clock import Clock, ManualClock, SystemClock
from aiotq.codecs import Codecs
from aiotq.exceptions import ImproperlyConfigured, TransportError
from aiotq.message import Message, pack
from aiotq.results.base import BackendContext, Meta
from aiotq.results.redis import RedisBackend
from aiotq.settings import Settings
from tests.conftest import REDIS_URL, require_binary, require_service

pytestmark = pytest.mark.redis

LEASE = 1.0
MakeBroker = Callable[..., Awaitable[RedisBroker]]


def message(n: int | str, priority: int | None = None) -> Message:
    return Message(headers={"lang": "py", "task": "tests.noop", "id": f"id-{n}", "retries": 0},
                   body=b"[[], {}, {}]", content_type="application/json",
                   correlation_id=f"id-{n}", priority=priority)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"worker_lease_timeout": LEASE, "worker_eta_horizon": 60.0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def delete_keys(client: Redis, *patterns: str) -> None:
    for pattern in patterns:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    require_service("Redis", "127.0.0.1", 6379)
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_broker(admin: Redis, clock: ManualClock, queue_name: str
                      ) -> AsyncIterator[MakeBroker]:
    """Brokers on the shared server; every key of ``queue_name*`` is deleted afterwards."""
    made: list[RedisBroker] = []

    async def make(url: str = REDIS_URL, use_clock: Clock | None = None,
                   **overrides: object) -> RedisBroker:
        broker = RedisBroker(BrokerContext(url, settings(**overrides), use_clock or clock))
        await broker.connect()
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in made:
            await broker.close()
        await delete_keys(admin, f"aiotq:{{{queue_name}*")


@pytest.fixture
async def broker(make_broker: MakeBroker) -> RedisBroker:
    return await make_broker()


async def lane_lengths(admin: Redis, broker: RedisBroker, queue: str) -> list[int]:
    return [await admin.xlen(key) for key in broker.layout.keys(queue).lanes]


# -- priority lanes --------------------------------------------------------------------


def test_priorities_map_to_lanes() -> None:
    layout = Layout({})
    assert [layout.lane(p) for p in (None, 0, 1, 3, 4, 9, 10, 63, 64, 200, 224, 255)] == [
        0, 0, 1, 1, 2, 3, 4, 4, 5, 7, 8, 8,
    ]
    assert layout.keys("q").lanes[-1] == "aiotq:{q}:p224"


async def test_priority_steps_are_configurable(make_broker: MakeBroker, queue_name: str
                                               ) -> None:
    custom = await make_broker(broker_transport_options={"priority_steps": [0, 128]})
    await custom.publish_many([Outgoing(message(n, p), Route(queue_name))
                               for n, p in [(1, 5), (2, 127), (3, 128), (4, 0)]])
    consumer = await custom.consumer([queue_name], prefetch=10)
    try:
        batch = await consumer.fetch(10, timeout=5)
        assert [d.message.headers["id"] for d in batch] == ["id-3", "id-1", "id-2", "id-4"]
        for delivery in batch:
            await delivery.ack()
    finally:
        await consumer.close()
    with pytest.raises(ImproperlyConfigured):
        await make_broker(broker_transport_options={"priority_steps": [1, 5]})


# -- far ETAs --------------------------------------------------------------------------


async def test_far_eta_sits_in_the_sorted_set_until_due(
    broker: RedisBroker, admin: Redis, clock: ManualClock, queue_name: str
) -> None:
    keys = broker.layout.keys(queue_name)
    eta = dt.datetime.fromtimestamp(clock.time() + 3600, dt.UTC)
    await broker.publish(message(1), Route(queue_name), eta=eta)
    [(_, score)] = await admin.zrange(keys.schedule, 0, -1, withscores=True)
    assert score == pytest.approx(eta.timestamp())
    assert sum(await lane_lengths(admin, broker, queue_name)) == 0

    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        assert await consumer.fetch(10, timeout=0.3) == []
        # A fetch already waiting notices the clock pass the ETA (its block is bounded).
        waiting = asyncio.create_task(consumer.fetch(10, timeout=5))
        await asyncio.sleep(0.1)
        await clock.advance(3601)
        async with asyncio.timeout(2):
            [due] = await waiting
        assert due.message.headers["id"] == "id-1" and due.delivery_count == 1
        assert await admin.zcard(keys.schedule) == 0
        await due.ack()
    finally:
        await consumer.close()


async def test_eta_due_while_no_worker_runs_waits_for_one(
    broker: RedisBroker, admin: Redis, clock: ManualClock, queue_name: str
) -> None:
    await broker.publish(message(1), Route(queue_name),
                         eta=dt.datetime.fromtimestamp(clock.time() + 7200, dt.UTC))
    await clock.advance(7201)
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [due] = await consumer.fetch(1, timeout=5)
        assert due.message.headers["id"] == "id-1"
        await due.ack()
    finally:
        await consumer.close()


async def test_defer_parks_with_a_fresh_count_and_nothing_stays_pending(
    broker: RedisBroker, admin: Redis, clock: ManualClock, queue_name: str
) -> None:
    await broker.publish(message(1, priority=200), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.defer(dt.datetime.fromtimestamp(clock.time() + 86400, dt.UTC))
        keys = broker.layout.keys(queue_name)
        assert await admin.zcard(keys.schedule) == 1
        lane = keys.lanes[broker.layout.lane(200)]
        assert await admin.xlen(lane) == 0
        assert (await admin.xpending(lane, "aiotq"))["pending"] == 0
        await clock.advance(86401)
        [again] = await consumer.fetch(1, timeout=5)
        assert again.message.priority == 200 and again.delivery_count == 1
        await again.ack()
    finally:
        await consumer.close()


# -- bad input and bounded memory ------------------------------------------------------


async def test_garbage_entries_are_dead_lettered_and_valid_ones_delivered(
    broker: RedisBroker, admin: Redis, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    lane = broker.layout.keys(queue_name).lanes[0]
    await admin.xadd(lane, {"foo": "bar"})
    await admin.xadd(lane, {"m": b"not a frame"})
    await broker.publish(message(1), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        with caplog.at_level(logging.WARNING, logger="aiotq.broker.redis"):
            [delivery] = await consumer.fetch(10, timeout=5)
        assert delivery.message.headers["id"] == "id-1"
        await delivery.ack()
    finally:
        await consumer.close()
    assert len([r for r in caplog.records if "dead-lettering" in r.message]) == 2
    dead = await broker.dead_letters(queue_name)
    assert [d.message for d in dead] == [None, None]
    assert all(d.reason.startswith("undecodable stream entry") for d in dead)
    assert dead[1].raw == b"not a frame"
    assert await admin.xlen(lane) == 0


async def test_streams_stay_bounded_under_steady_load(
    broker: RedisBroker, admin: Redis, queue_name: str
) -> None:
    consumer = await broker.consumer([queue_name], prefetch=100)
    longest = 0
    try:
        for round_ in range(100):
            await broker.publish_many([Outgoing(message(f"{round_}-{n}", n % 10),
                                                Route(queue_name)) for n in range(100)])
            batch: list[Delivery] = []
            while len(batch) < 100:
                batch += await consumer.fetch(100 - len(batch), timeout=5)
            longest = max(longest, sum(await lane_lengths(admin, broker, queue_name)))
            await asyncio.gather(*(delivery.ack() for delivery in batch))
    finally:
        await consumer.close()
    assert longest <= 100
    assert sum(await lane_lengths(admin, broker, queue_name)) == 0
    added = 0
    for key in broker.layout.keys(queue_name).lanes:
        info = await admin.xinfo_stream(key)
        added += info["entries-added"]
    assert added == 10_000



async def test_a_steady_stream_of_tasks_does_not_hold_back_due_etas(
    make_broker: MakeBroker, clock: ManualClock, queue_name: str
) -> None:
    # While entries stream in, the consumer only blocks on its lanes; the fetch script,
    # which promotes due ETAs, still runs at least every second. (A long lease keeps the
    # claims, which run the script too, out of the way.)
    broker = await make_broker(worker_lease_timeout=600.0)
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        assert await consumer.fetch(10, timeout=0.1) == []
        waiting = asyncio.create_task(consumer.fetch(10, timeout=5))
        await asyncio.sleep(0.1)
        await broker.publish(message("streamed-0"), Route(queue_name))
        [first] = await waiting  # found by the blocking read: streaming from now on
        await first.ack()
        await broker.publish(message("parked"), Route(queue_name),
                             eta=dt.datetime.fromtimestamp(clock.time() + 3600, dt.UTC))
        await clock.advance(3601)
        seen: list[str] = []
        async with asyncio.timeout(5):
            while "id-parked" not in seen:
                await broker.publish(message(f"streamed-{len(seen) + 1}"), Route(queue_name))
                for delivery in await consumer.fetch(10, timeout=1):
                    seen.append(delivery.message.headers["id"])
                    await delivery.ack()
                await asyncio.sleep(0.01)
    finally:
        await consumer.close()


async def test_release_is_not_counted_as_an_attempt(
    broker: RedisBroker, make_broker: MakeBroker, queue_name: str
) -> None:
    await broker.publish(message(1), Route(queue_name))
    dying = await (await make_broker()).consumer([queue_name], prefetch=1)
    [first] = await dying.fetch(1, timeout=5)
    dying.abandon()
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [taken] = await consumer.fetch(1, timeout=5)
        assert taken.delivery_count == 2
        await taken.release()
        [again] = await consumer.fetch(1, timeout=5)
        assert again.delivery_count == 2
        await again.ack()
        await first.release()  # the lease went to another consumer: nothing happens
        assert await consumer.fetch(1, timeout=0.2) == []
    finally:
        await consumer.close()


async def test_purge_removes_waiting_and_parked_not_running(
    broker: RedisBroker, clock: ManualClock, queue_name: str
) -> None:
    await broker.publish_many([Outgoing(message(n, n * 50), Route(queue_name))
                               for n in range(4)])
    await broker.publish(message("far"), Route(queue_name),
                         eta=dt.datetime.fromtimestamp(clock.time() + 3600, dt.UTC))
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [running] = await consumer.fetch(1, timeout=5)
        assert await broker.purge(queue_name) == 4
        assert await consumer.fetch(1, timeout=0.2) == []
        await running.ack()
    finally:
        await consumer.close()


# -- leases ----------------------------------------------------------------------------


async def test_live_consumer_keeps_its_lease_and_a_dead_ones_is_taken_over(
    make_broker: MakeBroker, queue_name: str
) -> None:
    holder_broker, other_broker = await make_broker(), await make_broker()
    await holder_broker.publish(message(1), Route(queue_name))
    holder = await holder_broker.consumer([queue_name], prefetch=1)
    other = await other_broker.consumer([queue_name], prefetch=1)
    try:
        [held] = await holder.fetch(1, timeout=5)
        loop = asyncio.get_running_loop()
        until = loop.time() + 3 * LEASE
        while loop.time() < until:
            assert await other.fetch(1, timeout=0.5) == []
        # Killed: no heartbeat, connections gone, nothing released.
        holder.abandon()
        await holder_broker.close()
        started = loop.time()
        [taken] = await other.fetch(1, timeout=5)
        assert loop.time() - started >= LEASE * 0.5
        assert taken.message.headers["id"] == "id-1"
        assert taken.delivery_count == 2
        assert held.delivery_count == 1
        await taken.ack()
    finally:
        await other.close()


# -- a restarted server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, without persistence, that it may restart."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self._directory),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except Exception:
                        await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self, *, save: bool) -> None:
        """Shut down; with ``save``, the next start loads the data (a persistent server's
        restart), without it the server comes back empty."""
        assert self._process is not None
        client = Redis.from_url(self.url)
        try:
            await client.execute_command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        except Exception:  # the server closes the connection as it goes
            pass
        finally:
            await client.aclose()
        try:
            async with asyncio.timeout(10):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    require_binary("redis-server")
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def consume_forever(consumer: RedisConsumer, seen: list[str]) -> None:
    """A worker's loop: transport errors are logged and fetching goes on."""
    while True:
        try:
            batch = await consumer.fetch(50, timeout=0.5)
        except TransportError:
            await asyncio.sleep(0.05)
            continue
        for delivery in batch:
            seen.append(delivery.message.headers["id"].removeprefix("id-"))
            try:
                await delivery.ack()
            except TransportError:
                pass  # not acked: redelivered after the lease timeout


async def publish_with_retry(broker: RedisBroker, ids: list[str], queue: str) -> None:
    for task_id in ids:
        while True:
            try:
                await broker.publish(message(task_id), Route(queue))
                break
            except TransportError:
                await asyncio.sleep(0.05)


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_restarted_server_loses_nothing_and_consumers_resume(
    private_redis: PrivateRedis, queue_name: str
) -> None:
    context = BrokerContext(private_redis.url, settings(), SystemClock())
    producer, worker = RedisBroker(context), RedisBroker(context)
    consumer = await worker.consumer([queue_name], prefetch=50)
    seen: list[str] = []
    consuming = asyncio.create_task(consume_forever(consumer, seen))
    try:
        # A restart with the data kept, while publishing and consuming.
        first = [f"a{n}" for n in range(1500)]
        publishing = asyncio.create_task(publish_with_retry(producer, first, queue_name))
        await wait_for(lambda: len(seen) >= 300, 20)
        assert not publishing.done()
        await private_redis.stop(save=True)
        await asyncio.sleep(0.5)
        await private_redis.start()
        await publishing
        await wait_for(lambda: set(first) <= set(seen), 20)

        # A restart that loses everything (groups too) once the queue is drained.
        await private_redis.stop(save=False)
        await private_redis.start()
        second = [f"b{n}" for n in range(200)]
        await publish_with_retry(producer, second, queue_name)
        await wait_for(lambda: set(second) <= set(seen), 20)
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await consumer.close()
        await producer.close()
        await worker.close()


# -- result backend --------------------------------------------------------------------


@pytest.fixture
async def backend(admin: Redis) -> AsyncIterator[RedisBackend]:
    instance = RedisBackend(BackendContext(
        REDIS_URL, Settings(result_expires=60.0, result_state_history=3), Codecs(),
        SystemClock(),
    ))
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


def meta(task_id: str, status: str, result: object = None) -> Meta:
    return {"task_id": task_id, "status": status, "result": result, "traceback": None,
            "children": [], "date_done": None}


@pytest.fixture
def task_id(admin: Redis) -> str:
    return f"test-{uuid.uuid4()}"


@pytest.fixture
async def cleanup_task(admin: Redis, task_id: str) -> AsyncIterator[None]:
    yield
    await admin.delete(f"celery-task-meta-{task_id}", f"aiotq:states:{task_id}")


async def test_results_use_celerys_key_with_a_ttl_in_ms_and_a_capped_history(
    backend: RedisBackend, admin: Redis, task_id: str, cleanup_task: None
) -> None:
    pubsub = admin.pubsub()
    await pubsub.subscribe(f"celery-task-meta-{task_id}")
    for n in range(5):
        await backend.store(meta(task_id, "PROGRESS", n))
    await backend.store(meta(task_id, "SUCCESS", 42))
    stored = json.loads(await admin.get(f"celery-task-meta-{task_id}"))
    assert stored["status"] == "SUCCESS" and stored["result"] == 42
    assert 59_000 < await admin.pttl(f"celery-task-meta-{task_id}") <= 60_000
    assert 59_000 < await admin.pttl(f"aiotq:states:{task_id}") <= 60_000
    assert await admin.xlen(f"aiotq:states:{task_id}") == 3
    published = []
    async with asyncio.timeout(5):
        while len(published) < 6:
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if item is not None:
                published.append(json.loads(item["data"])["status"])
    assert published[-1] == "SUCCESS"
    await pubsub.aclose()
    await backend.forget(task_id)
    assert await admin.exists(f"celery-task-meta-{task_id}", f"aiotq:states:{task_id}") == 0


async def test_get_reads_a_result_celery_wrote(backend: RedisBackend, admin: Redis,
                                               task_id: str, cleanup_task: None) -> None:
    celery_meta = {"status": "SUCCESS", "result": 4, "traceback": None, "children": [],
                   "date_done": "2024-01-01T00:00:00+00:00", "task_id": task_id}
    await admin.set(f"celery-task-meta-{task_id}", json.dumps(celery_meta), ex=60)
    assert await backend.get(task_id) == celery_meta


async def test_celery_reads_an_aiotq_result(backend: RedisBackend, task_id: str,
                                            cleanup_task: None) -> None:
    from celery import Celery

    await backend.store(meta(task_id, "SUCCESS", {"answer": 42}))
    celery = Celery("interop", backend=REDIS_URL)
    try:
        found = await asyncio.to_thread(celery.backend.get_task_meta, task_id)
    finally:
        celery.close()
    assert found["status"] == "SUCCESS" and found["result"] == {"answer": 42}


async def first_state(backend: RedisBackend, task_id: str) -> Meta:
    async for item in backend.watch([task_id]):
        return item
    raise AssertionError("the watch ended")

async def test_many_watchers_share_one_reading_connection(
    backend: RedisBackend, admin: Redis
) -> None:
    ids = [f"test-{uuid.uuid4()}" for _ in range(200)]

    try:
        watching = [asyncio.create_task(first_state(backend, task_id)) for task_id in ids]
        await asyncio.sleep(0.2)
        for task_id in ids:
            await backend.store(meta(task_id, "SUCCESS", task_id))
        async with asyncio.timeout(5):
            results = await asyncio.gather(*watching)
        assert [m["result"] for m in results] == ids
        pool = backend.client.connection_pool
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 4
    finally:
        await admin.delete(*[f"celery-task-meta-{t}" for t in ids],
                           *[f"aiotq:states:{t}" for t in ids])


async def test_watches_one_after_another_need_no_wake_ups(
    backend: RedisBackend, admin: Redis
) -> None:
    # A round trip at a time (delay(), get(), delay(), ...): the shared read ends with the
    # last watch, so the next one starts a read of its own instead of waking a stale one.
    ids = [f"test-{uuid.uuid4()}" for _ in range(5)]

    try:
        for task_id in ids:
            watching = asyncio.create_task(first_state(backend, task_id))
            await asyncio.sleep(0.05)  # the feed now blocks on this task's stream
            await backend.store(meta(task_id, "SUCCESS", task_id))
            async with asyncio.timeout(5):
                assert (await watching)["result"] == task_id
        assert backend._feed is not None
        assert not await admin.exists(backend._feed._wake_key)
    finally:
        await admin.delete(*[f"celery-task-meta-{t}" for t in ids],
                           *[f"aiotq:states:{t}" for t in ids])

async def test_watch_replays_history_then_follows_a_group(
    backend: RedisBackend, admin: Redis
) -> None:
    ids = [f"test-{uuid.uuid4()}" for _ in range(3)]
    try:
        await backend.store(meta(ids[0], "STARTED"))
        seen: list[tuple[str, str]] = []

        async def collect() -> None:
            async for item in backend.watch(ids):
                seen.append((item["task_id"], item["status"]))
                if len(seen) == 5:
                    return

        watching = asyncio.create_task(collect())
        await asyncio.sleep(0.1)
        await backend.store(meta(ids[1], "SUCCESS"))
        await backend.store(meta(ids[0], "SUCCESS"))
        await backend.store(meta(ids[2], "PROGRESS"))
        await backend.store(meta(ids[2], "FAILURE"))
        async with asyncio.timeout(5):
            await watching
        assert seen[0] == (ids[0], "STARTED")
        assert sorted(seen[1:]) == sorted([(ids[1], "SUCCESS"), (ids[0], "SUCCESS"),
                                           (ids[2], "PROGRESS"), (ids[2], "FAILURE")])
        assert seen.index((ids[2], "PROGRESS")) < seen.index((ids[2], "FAILURE"))
    finally:
        await admin.delete(*[f"celery-task-meta-{t}" for t in ids],
                           *[f"aiotq:states:{t}" for t in ids])


async def test_a_lone_publish_is_sent_before_its_caller_yields(
    broker: RedisBroker, queue_name: str
) -> None:
    """A lone ``delay()`` is sent by its caller, not an event-loop turn later by a flushing
    task: its round trip starts at once."""
    await broker.publish(message(0), Route(queue_name))  # Redis has the script from now on
    publishing = asyncio.create_task(broker.publish(message(1), Route(queue_name)))
    await asyncio.sleep(0)  # the publishing task runs up to its first wait
    lengths = lengths_while_the_loop_is_held(broker.layout.keys(queue_name).lanes)
    await publishing
    assert sum(lengths) == 2


def lengths_while_the_loop_is_held(keys: Sequence[str]) -> list[int]:
    """Blocks the event loop on purpose: Redis takes what was sent, nothing more is sent."""
    time.sleep(0.2)
    reader = SyncRedis.from_url(REDIS_URL)
    try:
        return [reader.xlen(key) for key in keys]
    finally:
        reader.close()


async def test_message_frames_are_what_the_stream_holds(
    broker: RedisBroker, admin: Redis, queue_name: str
) -> None:
    sent = message(1, priority=9)
    await broker.publish(sent, Route(queue_name))
    lane = broker.layout.keys(queue_name).lanes[broker.layout.lane(9)]
    [(_, fields)] = await admin.xrange(lane)
    assert fields == {b"m": pack(sent)}

"""What only the SQLite broker and backend promise: several processes on one file, leases
that outlive a killed process, prompt cross-process wake-ups, an idle wait that sleeps,
and tables that stay bounded. Child processes run ``CHILD`` with ``sys.executable -c``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from aiotq._sqlite import Database, parse_url
from aiotq.broker.base import BrokerContext, Outgoing, Route
from aiotq.broker.sqlite import SQLiteBroker
from aiotq.clock import Clock, ManualClock, SystemClock
from aiotq.codecs import Codecs
from aiotq.exceptions import ImproperlyConfigured, TransportError
from aiotq.message import Message, pack
from aiotq.results.base import BackendContext, Meta
from aiotq.results.sqlite import SQLiteBackend
from aiotq.settings import Settings

QUEUE = "jobs"
LEASE = 1.0

#: Roles a child process plays: ``python -c CHILD <role> <url> [args...]``.
CHILD = r"""
import asyncio, json, sys, time
from aiotq.broker.base import BrokerContext, Outgoing, Route
from aiotq.broker.sqlite import SQLiteBroker
from aiotq.clock import SystemClock
from aiotq.codecs import Codecs
from aiotq.message import Message
from aiotq.results.base import BackendContext
from aiotq.results.sqlite import SQLiteBackend
from aiotq.settings import Settings

role, url, *args = sys.argv[1:]
settings = Settings(worker_lease_timeout=1.0)

def message(task_id, priority):
    return Message(headers={"task": "t", "id": task_id}, body=b"[[], {}, {}]",
                   content_type="application/json", priority=priority)

async def produce(prefix, count):
    broker = SQLiteBroker(BrokerContext(url, settings, SystemClock()))
    for start in range(0, int(count), 10):
        await broker.publish_many([Outgoing(message(f"{prefix}-{n}", 5), Route("jobs"))
                                   for n in range(start, start + 10)])
    await broker.close()

async def consume():
    broker = SQLiteBroker(BrokerContext(url, settings, SystemClock()))
    consumer = await broker.consumer(["jobs"], prefetch=10)
    print("ready", flush=True)
    seen = []
    while True:
        batch = await consumer.fetch(10, timeout=30)
        for index, delivery in enumerate(batch):
            if delivery.message.task_id == "stop":
                await delivery.ack()
                for rest in batch[index + 1:]:
                    await rest.release()
                print(json.dumps(seen), flush=True)
                await broker.close()
                return
            seen.append(delivery.message.task_id)
            await asyncio.sleep(0.002)  # some work, so that both consumers get a share
            await delivery.ack()

async def hold():
    broker = SQLiteBroker(BrokerContext(url, settings, SystemClock()))
    consumer = await broker.consumer(["jobs"], prefetch=1)
    [delivery] = await consumer.fetch(1, timeout=30)
    print(delivery.message.task_id, flush=True)
    await asyncio.sleep(3600)

async def store_state(task_id, delay):
    backend = SQLiteBackend(BackendContext(url, Settings(), Codecs(), SystemClock()))
    await backend.connect()
    await asyncio.sleep(float(delay))
    await backend.store({"task_id": task_id, "status": "PROGRESS",
                         "result": {"sent": time.time()}})
    await backend.close()

roles = {"produce": produce, "consume": consume, "hold": hold, "store": store_state}
asyncio.run(roles[role](*args))
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiotq.db'}"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate()


def spawn(children: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    children.append(child)
    return child


async def finish(child: subprocess.Popen[str], timeout: float = 30) -> str:
    stdout, stderr = await asyncio.to_thread(child.communicate, timeout=timeout)
    assert child.returncode == 0, stderr
    return stdout


async def readline(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    return (await asyncio.to_thread(child.stdout.readline)).strip()


def message(task_id: str, priority: int | None = None) -> Message:
    return Message(headers={"task": "t", "id": task_id}, body=b"[[], {}, {}]",
                   content_type="application/json", priority=priority)


def make_broker(url: str, clock: Clock | None = None) -> SQLiteBroker:
    settings = Settings(worker_lease_timeout=LEASE)
    return SQLiteBroker(BrokerContext(url, settings, clock or SystemClock()))


@pytest.fixture
async def broker(url: str) -> AsyncIterator[SQLiteBroker]:
    instance = make_broker(url)
    await instance.connect()
    yield instance
    await instance.close()


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(parse_url(url).path) as conn:
        return conn.execute(query).fetchall()


# -- several processes --------------------------------------------------------------------


async def test_two_producers_two_consumers_each_message_once(
    url: str, broker: SQLiteBroker, children: list[subprocess.Popen[str]]
) -> None:
    consumers = [spawn(children, "consume", url) for _ in range(2)]
    for consumer in consumers:
        assert await readline(consumer) == "ready"
    producers = [spawn(children, "produce", url, prefix, "150") for prefix in ("a", "b")]
    for producer in producers:
        await finish(producer)
    # Priority 0 sorts after every job (priority 5): a stop goes only once the jobs are gone.
    await broker.publish_many([Outgoing(message("stop", 0), Route(QUEUE))] * 2)
    seen = [json.loads(await finish(consumer)) for consumer in consumers]
    everything = seen[0] + seen[1]
    assert sorted(everything) == sorted(f"{p}-{n}" for p in "ab" for n in range(150))
    assert all(seen), "both consumers took part"
    assert rows(url, "SELECT COUNT(*) FROM aiotq_messages") == [(0,)]


async def test_killed_consumer_lease_is_taken_over(
    url: str, broker: SQLiteBroker, children: list[subprocess.Popen[str]]
) -> None:
    await broker.publish(message("precious"), Route(QUEUE))
    holder = spawn(children, "hold", url)
    assert await readline(holder) == "precious"
    consumer = await broker.consumer([QUEUE], prefetch=1)
    # Alive, the holder renews its lease: nobody else gets the message past the lease time.
    assert await consumer.fetch(1, timeout=2 * LEASE) == []
    holder.send_signal(signal.SIGKILL)
    started = time.monotonic()
    [delivery] = await consumer.fetch(1, timeout=5 * LEASE)
    assert time.monotonic() - started < 2 * LEASE
    assert delivery.message.task_id == "precious"
    assert delivery.delivery_count == 2
    await delivery.ack()


async def test_publish_from_another_process_wakes_a_waiting_fetch(
    url: str, broker: SQLiteBroker, children: list[subprocess.Popen[str]]
) -> None:
    consumer = await broker.consumer([QUEUE], prefetch=10)
    producer = spawn(children, "produce", url, "x", "10")
    batch = await consumer.fetch(10, timeout=20)
    assert batch and batch[0].message.task_id == "x-0"
    await finish(producer)


async def test_state_from_another_process_arrives_promptly(
    url: str, children: list[subprocess.Popen[str]]
) -> None:
    backend = SQLiteBackend(BackendContext(url, Settings(), Codecs(), SystemClock()))
    await backend.connect()
    try:
        # The child waits a second first, so this watcher has backed off to its idle poll.
        child = spawn(children, "store", url, "task-1", "1.0")
        async with asyncio.timeout(20), contextlib.aclosing(backend.watch(["task-1"])) as feed:
            async for meta in feed:
                latency = time.time() - meta["result"]["sent"]
                break
        await finish(child)
    finally:
        await backend.close()
    assert latency < 0.5


async def test_idle_fetch_sleeps(broker: SQLiteBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted, not timed: on a throttled host the CPU time the guest charges an idle
    # process is noise. Polling every 50 ms is 20 looks per idle second, plus a few while
    # backing off from 2 ms; a fetch that spins takes thousands.
    consumer = await broker.consumer([QUEUE], prefetch=1)
    await consumer.fetch(1, timeout=0.1)
    looks = 0
    run = broker.db.run

    async def counted(job: Callable[[sqlite3.Connection], object]) -> object:
        nonlocal looks
        looks += 1
        return await run(job)

    monkeypatch.setattr(broker.db, "run", counted)
    assert await consumer.fetch(1, timeout=1.0) == []
    assert 0 < looks <= 40


# -- the tables ----------------------------------------------------------------------------


async def test_dead_letters_table(url: str) -> None:
    clock = ManualClock(start=1_000_000.0)
    broker = make_broker(url, clock)
    try:
        await broker.publish(message("first"), Route(QUEUE))
        await broker.publish(message("second"), Route(QUEUE))
        consumer = await broker.consumer([QUEUE], prefetch=2)
        first, second = await consumer.fetch(2, timeout=5)
        await first.dead_letter("poison: delivered 6 times")
        await clock.advance(5)
        await second.dead_letter("unknown task")
        letters = await broker.dead_letters(QUEUE)
        await consumer.close()
    finally:
        await broker.close()
    assert [(d.reason, d.message and d.message.task_id, d.time) for d in letters] == [
        ("poison: delivered 6 times", "first", 1_000_000.0),
        ("unknown task", "second", 1_000_005.0),
    ]
    assert rows(url, "SELECT queue, reason, time FROM aiotq_dead_letters ORDER BY id") == [
        (QUEUE, "poison: delivered 6 times", 1_000_000.0), (QUEUE, "unknown task", 1_000_005.0),
    ]
    assert rows(url, "SELECT COUNT(*) FROM aiotq_messages") == [(0,)]


async def test_undecodable_row_is_dead_lettered(url: str, broker: SQLiteBroker) -> None:
    await broker.publish(message("good"), Route(QUEUE))
    with sqlite3.connect(parse_url(url).path) as conn:
        conn.execute("INSERT INTO aiotq_messages (queue, priority, payload) VALUES (?, 9, ?)",
                     (QUEUE, b"\xc1garbage"))
    consumer = await broker.consumer([QUEUE], prefetch=10)
    batch = await consumer.fetch(10, timeout=5)
    assert [d.message.task_id for d in batch] == ["good"]
    [dead] = await broker.dead_letters(QUEUE)
    assert dead.message is None and dead.raw == b"\xc1garbage"
    assert "not an aiotq message frame" in dead.reason


async def test_far_eta_and_defer_are_rows_with_a_time(url: str) -> None:
    clock = ManualClock()
    broker = make_broker(url, clock)
    eta = dt.datetime.fromtimestamp(clock.time() + 3600, dt.UTC)
    try:
        await broker.publish(message("later"), Route(QUEUE), eta=eta)
        await broker.publish(message("now"), Route(QUEUE))
        assert rows(url, "SELECT available_at FROM aiotq_messages ORDER BY id") == [
            (eta.timestamp(),), (None,),
        ]
        consumer = await broker.consumer([QUEUE], prefetch=1)
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.defer(eta + dt.timedelta(seconds=1))
        assert rows(url, "SELECT owner, deliveries FROM aiotq_messages") == [(None, 0)] * 2
        await consumer.close()
    finally:
        await broker.close()


async def test_result_history_is_bounded_and_expired_rows_go(url: str) -> None:
    clock = ManualClock()
    settings = Settings(result_state_history=3, result_expires=60.0)
    backend = SQLiteBackend(BackendContext(url, settings, Codecs(), clock))
    try:
        for n in range(5):
            await backend.store(state("old", n))
        replay = []
        async with contextlib.aclosing(backend.watch(["old"])) as feed:
            async for meta in feed:
                replay.append(meta["result"])
                if len(replay) == 3:
                    break
        assert replay == [2, 3, 4]
        await clock.advance(61)
        assert await backend.get("old") is None
        await backend.store(state("new", 0))
    finally:
        await backend.close()
    assert rows(url, "SELECT task_id FROM aiotq_results") == [("new",)]


def state(task_id: str, n: int) -> Meta:
    return {"task_id": task_id, "status": "PROGRESS", "result": n}


def test_one_app_on_several_event_loops_in_turn(url: str) -> None:
    shared: dict[str, object] = {}
    context = BrokerContext(url, Settings(), SystemClock(), shared)

    async def publish() -> None:
        broker = SQLiteBroker(context)
        await broker.publish(message("across"), Route(QUEUE))
        await broker.close()

    async def take() -> str:
        broker = SQLiteBroker(context)
        consumer = await broker.consumer([QUEUE], prefetch=1)
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.ack()
        await broker.close()
        return delivery.message.task_id

    asyncio.run(publish())
    assert asyncio.run(take()) == "across"


# -- URLs and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///aiotq.db", os.path.abspath("aiotq.db")),
    ("sqlite://data/aiotq.db", os.path.abspath("data/aiotq.db")),
    ("sqlite:////var/lib/aiotq.db", "/var/lib/aiotq.db"),
])
def test_urls_follow_sqlalchemy(url: str, path: str) -> None:
    assert parse_url(url).path == path


def test_url_options() -> None:
    location = parse_url("sqlite:////tmp/q.db?synchronous=FULL&busy_timeout=2.5")
    assert (location.synchronous, location.busy_timeout) == ("full", 2.5)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///a.db?x=1",
                                 "sqlite:///a.db?synchronous=sometimes"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_url(url)


async def test_unopenable_file_is_a_transport_error(tmp_path: Path) -> None:
    broker = make_broker(f"sqlite:///{tmp_path / 'missing' / 'aiotq.db'}")
    with pytest.raises(TransportError) as caught:
        await broker.publish(message("x"), Route(QUEUE))
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    await broker.close()


async def test_concurrent_writes_share_one_commit_and_fail_alone(url: str) -> None:
    db = Database(url, {}, "test", ["CREATE TABLE IF NOT EXISTS t (v INTEGER UNIQUE)"])
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))

    def insert(value: int) -> Callable[[sqlite3.Connection], int]:
        return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (value,)).rowcount

    try:
        assert await asyncio.gather(*(db.write(insert(n)) for n in range(20))) == [1] * 20
        assert statements.count("COMMIT") == 1  # 20 writes, one transaction

        # 5 is there already: that write fails (and only that one), the others commit.
        outcomes = await asyncio.gather(*(db.write(insert(n)) for n in (100, 5, 101)),
                                        return_exceptions=True)
        assert outcomes[0] == outcomes[2] == 1
        assert isinstance(outcomes[1], TransportError) and "UNIQUE" in str(outcomes[1])
        rows = await db.run(lambda conn: conn.execute("SELECT v FROM t").fetchall())
        assert sorted(v for (v,) in rows) == [*range(20), 100, 101]
    finally:
        await db.run(lambda conn: conn.set_trace_callback(None))
        await db.close()


def test_packed_frames_are_what_the_table_holds(url: str) -> None:
    async def publish() -> None:
        broker = make_broker(url)
        await broker.publish(message("frame", 7), Route(QUEUE))
        await broker.close()

    asyncio.run(publish())
    assert rows(url, "SELECT queue, priority, payload FROM aiotq_messages") == [
        (QUEUE, 7, pack(message("frame", 7))),
    ]


async def test_settling_a_lease_taken_over_changes_nothing(
    url: str, broker: SQLiteBroker, caplog: pytest.LogCaptureFixture
) -> None:
    await broker.publish(message("shared"), Route(QUEUE))
    consumer = await broker.consumer([QUEUE], prefetch=1)
    [delivery] = await consumer.fetch(1, timeout=5)
    with sqlite3.connect(parse_url(url).path) as conn:  # what a takeover leaves behind
        conn.execute("UPDATE aiotq_messages SET owner = 'another-consumer'")
    await delivery.ack()
    assert rows(url, "SELECT owner FROM aiotq_messages") == [("another-consumer",)]
    assert "taken over after its lease lapsed" in caplog.text

"""Worker behaviour on the memory broker: delivery guarantees, bad input, limits, shutdown."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from aiotq import App, ManualClock, Reject, Task, Worker, states
from aiotq.broker.base import Broker, Route
from aiotq.broker.memory import MemoryConsumer
from aiotq.exceptions import MessageError
from aiotq.message import Message
from aiotq.testing import run_in_process

TIMEOUT = 10


@pytest.fixture
def app(queue_name: str) -> App:
    return App("proj", broker="memory://", clock=ManualClock(), task_default_queue=queue_name,
               worker_lease_timeout=30.0)


async def test_poison_message_is_dead_lettered(app: App, queue_name: str) -> None:
    app.conf.update(task_max_deliveries=2)
    ran: list[int] = []

    @app.task
    async def add(x: int, y: int) -> int:
        ran.append(x)
        return x + y

    clock = app.clock
    assert isinstance(clock, ManualClock)
    result = await add.delay(1, 1)
    for _ in range(2):  # two workers die holding it
        consumer = await app.broker.consumer([queue_name], prefetch=1)
        assert await consumer.fetch(1, timeout=1)
        assert isinstance(consumer, MemoryConsumer)
        consumer.abandon()
        await clock.advance(31)
    async with Worker(app, poll_interval=0.05):
        with pytest.raises(MessageError, match="poison message: delivered 3 times"):
            await result.get(timeout=TIMEOUT)
    assert ran == []
    [dead] = await app.broker.dead_letters(queue_name)
    assert "poison" in dead.reason
    await app.close()


async def test_bad_input_never_stops_the_worker(app: App, queue_name: str) -> None:
    app.conf.update(message_max_size=10_000)

    @app.task
    async def echo(value: Any) -> Any:
        return value

    async with run_in_process(app, queues=[queue_name]) as running:
        broker = app.broker
        garbage = Message({"no": "id"}, b"\x00", "application/json")
        await broker.publish(garbage, Route(queue_name))
        undecodable = Message({"id": "bad-json", "task": echo.name}, b"{nope",
                              "application/json")
        await broker.publish(undecodable, Route(queue_name))
        unknown = await app.send_task("proj.not_registered", args=(1,))
        refused = await echo.apply_async((1,), serializer="pickle")
        oversized = await echo.apply_async(("x" * 20_000,))
        valid = await echo.delay("still alive")
        assert await valid.get(timeout=TIMEOUT) == "still alive"
        for result, reason in [(unknown, "not registered"), (refused, "refusing content"),
                               (oversized, "exceeds the limit")]:
            with pytest.raises(MessageError, match=reason):
                await result.get(timeout=TIMEOUT)
        await running.join()
        reasons = [d.reason for d in await running.dead_letters()]
        assert len(reasons) == 5
        assert any("malformed message" in r for r in reasons)
        assert any("cannot deserialize" in r for r in reasons)


@pytest.mark.parametrize("acks_late", [True, False])
async def test_acks_late_decides_redelivery_after_a_cold_stop(
    app: App, queue_name: str, acks_late: bool
) -> None:
    started = asyncio.Event()
    runs: list[str] = []

    @app.task(acks_late=acks_late)
    async def stuck() -> None:
        runs.append("run")
        started.set()
        await asyncio.sleep(3600)

    app.conf.update(worker_shutdown_timeout=0.05)
    await stuck.delay()
    async with Worker(app, poll_interval=0.05):
        await asyncio.wait_for(started.wait(), TIMEOUT)
    started.clear()
    async with Worker(app, poll_interval=0.05):
        if acks_late:
            await asyncio.wait_for(started.wait(), TIMEOUT)
        else:
            await asyncio.sleep(0.3)
    assert runs == (["run", "run"] if acks_late else ["run"])
    await app.close()


async def test_concurrency_limit_and_thread_pool(app: App) -> None:
    running = 0
    peak = 0
    threads: set[str] = set()
    lock = threading.Lock()

    @app.task
    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    @app.task
    def blocking() -> str:
        with lock:
            threads.add(threading.current_thread().name)
        threading.Event().wait(0.05)
        return threading.current_thread().name

    async with run_in_process(app, concurrency=3, worker_threads=2):
        results = [await slow.delay() for _ in range(10)]
        names = [await blocking.delay() for _ in range(6)]
        for r in results:
            await r.get(timeout=TIMEOUT)
        assert {await r.get(timeout=TIMEOUT) for r in names} <= threads
    assert peak == 3
    assert 1 <= len(threads) <= 2 and all(t.startswith("aiotq-task") for t in threads)


async def test_far_eta_is_parked_in_the_broker(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async with run_in_process(app, worker_eta_horizon=60, worker_max_held=2) as running:
        far = await add.apply_async((1, 1), countdown=3600)
        near = [await add.apply_async((i, 0), countdown=10) for i in range(4)]
        await asyncio.sleep(0.2)
        assert len(running.worker._held) == 2  # the rest went back to the broker
        await running.advance(11)
        assert [await r.get(timeout=TIMEOUT) for r in near] == [0, 1, 2, 3]
        assert await far.refresh() == states.PENDING
        await running.advance(3600)
        assert await far.get(timeout=TIMEOUT) == 2


async def test_warm_stop_returns_held_messages(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    clock = ManualClock()
    async with run_in_process(app, clock=clock) as running:
        held = await add.apply_async((2, 2), countdown=30)
        await asyncio.sleep(0.2)
        assert len(running.worker._held) == 1
        shared = app.shared
    app.shared, app.clock = shared, clock  # a second worker on the same in-memory broker
    async with Worker(app, poll_interval=0.05):
        await clock.advance(31)
        assert await held.get(timeout=TIMEOUT) == 4
    await app.close()


async def test_sync_task_update_state_and_time_limit(app: App) -> None:
    @app.task(bind=True)
    def progress(self: Task[[], str]) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
        return "done"

    @app.task(time_limit=0.1)
    async def too_slow() -> None:
        await asyncio.sleep(5)

    @app.task
    async def rejecting() -> None:
        raise Reject("not for me")

    async with run_in_process(app, clock=None) as running:
        seen: list[str] = []
        result = await progress.delay()
        assert await result.get(on_message=lambda m: seen.append(m["status"]),
                                timeout=TIMEOUT) == "done"
        assert seen == ["PROGRESS", "SUCCESS"]
        from aiotq.execution import TimeLimitExceeded

        with pytest.raises(TimeLimitExceeded):
            await (await too_slow.delay()).get(timeout=TIMEOUT)
        rejected = await rejecting.delay()
        with pytest.raises(MessageError, match="rejected by the task: not for me"):
            await rejected.get(timeout=TIMEOUT)
        assert len(await running.dead_letters()) == 1


async def test_two_apps_are_apart() -> None:
    first = App("one", broker="memory://")
    second = App("two", broker="memory://")

    @first.task
    async def job() -> str:
        return "first"

    assert job.name in first.tasks and job.name not in second.tasks
    async with run_in_process(first):
        assert await (await job.delay()).get(timeout=TIMEOUT) == "first"
    assert first.codecs is not second.codecs


def test_app_works_from_several_event_loops_in_turn() -> None:
    app = App("loops", broker="memory://")

    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    async def once() -> int:
        async with app, Worker(app, poll_interval=0.05):
            return await (await add.delay(2, 2)).get(timeout=TIMEOUT)

    assert asyncio.run(once()) == 4
    assert asyncio.run(once()) == 4


def test_connections_are_per_loop_and_forgotten_on_close() -> None:
    app = App("loops", broker="memory://")

    async def brokers() -> tuple[Broker, Broker, Broker]:
        first, again = app.broker, app.broker
        await app.close()
        return first, again, app.broker

    first, again, after_close = asyncio.run(brokers())
    assert again is first and after_close is not first
    other_loop, _, _ = asyncio.run(brokers())
    assert other_loop is not after_close


async def test_warm_stop_releases_prefetched_messages(app: App) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    @app.task
    async def job(n: int) -> int:
        runs.append(n)
        started.set()
        await release.wait()
        return n

    app.conf.update(worker_prefetch_multiplier=3)
    results = [await job.delay(n) for n in range(3)]
    worker = Worker(app, concurrency=1, poll_interval=0.05)
    async with worker:
        await asyncio.wait_for(started.wait(), TIMEOUT)
        await asyncio.sleep(0.1)  # the other two are prefetched, waiting for the slot
        worker.stop()
        release.set()
    assert runs == [0]
    async with Worker(app, poll_interval=0.05):
        assert [await r.get(timeout=TIMEOUT) for r in results] == [0, 1, 2]
    await app.close()


async def test_stop_before_run_returns_at_once(app: App) -> None:
    worker = Worker(app, poll_interval=0.05)
    worker.stop()
    await asyncio.wait_for(worker.run(), TIMEOUT)
    await app.close()


async def test_chord_member_is_dead_lettered_not_run(app: App, queue_name: str) -> None:
    runs: list[int] = []

    @app.task
    async def member(x: int) -> int:
        runs.append(x)
        return x

    async with run_in_process(app, queues=[queue_name]) as running:
        body = app.codecs.encode([[1], {}, {"chord": {"task": "proj.body"}}], "json")[0]
        headers = {"id": "chord-member", "task": member.name, "retries": 0}
        await app.broker.publish(Message(headers, body, "application/json"), Route(queue_name))
        with pytest.raises(MessageError, match="chords are not supported"):
            await app.AsyncResult("chord-member").get(timeout=TIMEOUT)
        assert "chords are not supported" in (await running.dead_letters())[0].reason
    assert runs == []


async def test_fetched_tasks_start_before_the_next_fetch(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fetch sent ahead of the tasks just fetched would delay their results (a round
    # trip to the broker first).
    events: list[str] = []

    @app.task
    async def mark() -> None:
        events.append("run")

    fetch = MemoryConsumer.fetch

    async def recording_fetch(self: MemoryConsumer, limit: int, timeout: float) -> Any:
        events.append("fetch")
        batch = await fetch(self, limit, timeout)
        events.extend(["fetched"] * len(batch))
        return batch

    monkeypatch.setattr(MemoryConsumer, "fetch", recording_fetch)
    await mark.delay()
    async with Worker(app, poll_interval=0.05):
        async with asyncio.timeout(TIMEOUT):
            while "run" not in events:
                await asyncio.sleep(0.01)
    assert events[events.index("fetched") + 1] == "run"
    await app.close()

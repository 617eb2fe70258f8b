"""Every example and option of calling.rst, run unchanged on every broker and backend.

A fresh App per test, a unique queue, a worker in the test's event loop following a
ManualClock (countdowns and ETAs elapse with ``advance()``, not in real time).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aiotq import TaskRevokedError, Worker, group, states
from aiotq.testing import InProcessWorker, run_in_process
from tests.conftest import AMQP_URL, REDIS_URL
from tests.contract.apps import CallingApp, CustomError, make_app

BACKENDS = [
    pytest.param(("memory://", None), id="memory"),
    pytest.param(("sqlite", None), id="sqlite"),
    pytest.param((REDIS_URL, None), id="redis", marks=pytest.mark.redis),
    pytest.param((AMQP_URL, "rpc://"), id="amqp-rpc", marks=pytest.mark.amqp),
    pytest.param((AMQP_URL, REDIS_URL), id="amqp-redis",
                 marks=[pytest.mark.amqp, pytest.mark.redis]),
]
pytestmark = pytest.mark.parametrize("urls", BACKENDS)
TIMEOUT = 10


@pytest.fixture
def calling(queue_name: str) -> CallingApp:
    return make_app(queue_name, accept_content=["json", "msgpack", "yaml", "pickle"],
                    task_queues=[{"name": queue_name}, {"name": queue_name + ".high"},
                                 {"name": queue_name + ".math", "exchange": queue_name + ".tasks",
                                  "exchange_type": "topic", "routing_key": "math.#"}])


@pytest.fixture
async def worker(calling: CallingApp, urls: tuple[str, str | None], queue_name: str,
                 resolve_url: Callable[[str], str]) -> AsyncIterator[InProcessWorker]:
    broker = resolve_url(urls[0])
    backend = resolve_url(urls[1]) if urls[1] and urls[1] != "rpc://" else urls[1]
    if urls[1] and urls[1].startswith("redis"):
        resolve_url(urls[1])
    queues = [queue_name, queue_name + ".high", queue_name + ".math"]
    async with run_in_process(calling.app, broker=broker, backend=backend or broker,
                              queues=queues) as running:
        yield running


# -- Basics -------------------------------------------------------------------------


async def test_delay(calling: CallingApp, worker: InProcessWorker) -> None:
    result = await calling.add.delay(2, 2)
    assert await result.get(timeout=TIMEOUT) == 4
    assert result.state == states.SUCCESS


async def test_apply_async_args_and_kwargs(calling: CallingApp, worker: InProcessWorker) -> None:
    result = await calling.add.apply_async(args=[1], kwargs={"y": 5})
    assert await result.get(timeout=TIMEOUT) == 6


async def test_calling_runs_here_and_sends_nothing(calling: CallingApp,
                                                   worker: InProcessWorker) -> None:
    assert await calling.add(2, 2) == 4
    assert calling.mul(3, 3) == 9
    await worker.join()
    assert calling.record.threads == [threading.current_thread().name]
    assert worker.worker.processed == 0


async def test_signature_apply_async_and_send_task(calling: CallingApp,
                                                   worker: InProcessWorker) -> None:
    first = await calling.add.s(2, 2).apply_async()
    partial = await calling.add.s(2).delay(5)
    by_name = await calling.app.send_task(calling.add.name, args=(2, 2))
    assert [await r.get(timeout=TIMEOUT) for r in (first, partial, by_name)] == [4, 7, 4]


async def test_sync_task_runs_in_a_worker_thread(calling: CallingApp,
                                                 worker: InProcessWorker) -> None:
    assert await (await calling.mul.delay(6, 7)).get(timeout=TIMEOUT) == 42
    assert calling.record.threads and calling.record.threads[0].startswith("aiotq-task")


# -- Linking ------------------------------------------------------------------------


async def test_link_callback_gets_the_result(calling: CallingApp,
                                             worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((2, 2), link=calling.add.s(16))
    assert await result.get(timeout=TIMEOUT) == 4
    [child] = result.children
    assert await child.get(timeout=TIMEOUT) == 20


async def test_link_list_runs_in_order(calling: CallingApp, worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((2, 2), link=[calling.add.s(16), calling.other.s()])
    await result.get(timeout=TIMEOUT)
    assert [await c.get(timeout=TIMEOUT) for c in result.children] == [20, -4]


async def test_immutable_callback_ignores_the_result(calling: CallingApp,
                                                     worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((2, 2), link=calling.add.si(1, 1))
    await result.get(timeout=TIMEOUT)
    assert await result.children[0].get(timeout=TIMEOUT) == 2


async def test_link_error_gets_the_parent_id(calling: CallingApp,
                                             worker: InProcessWorker) -> None:
    result = await calling.boom.apply_async(link_error=calling.error_handler.s())
    with pytest.raises(ValueError, match="boom"):
        await result.get(timeout=TIMEOUT)
    await _eventually(lambda: bool(calling.record.errors))
    uuid_seen, exc, traceback = calling.record.errors[0]
    assert uuid_seen == result.id
    assert isinstance(exc, ValueError) and traceback and "ValueError: boom" in traceback


async def test_chain_and_pipe(calling: CallingApp, worker: InProcessWorker) -> None:
    result = await (calling.add.s(2, 2) | calling.add.s(4) | calling.mul.s(10)).apply_async()
    assert await result.get(timeout=TIMEOUT) == 80
    assert result.parent is not None
    assert await result.parent.get(timeout=TIMEOUT) == 8


# -- On message ---------------------------------------------------------------------


async def test_on_message_sees_every_state_in_order(calling: CallingApp,
                                                    worker: InProcessWorker) -> None:
    seen: list[dict[str, Any]] = []
    result = await calling.hello.apply_async((4, 6))
    value = await result.get(on_message=seen.append, propagate=False, timeout=TIMEOUT)
    assert value == "hello world: 10"
    assert [(m["status"], m["result"]) for m in seen] == [
        ("PROGRESS", {"progress": 50}), ("PROGRESS", {"progress": 90}),
        ("SUCCESS", "hello world: 10"),
    ]
    assert set(seen[0]) >= {"task_id", "status", "result", "traceback", "children"}


async def test_on_message_replays_states_sent_before_get(calling: CallingApp,
                                                         worker: InProcessWorker) -> None:
    result = await calling.hello.apply_async((1, 2))
    await worker.join()
    await asyncio.sleep(0.05)
    seen: list[str] = []
    await result.get(on_message=lambda m: seen.append(m["status"]), timeout=TIMEOUT)
    assert seen == ["PROGRESS", "PROGRESS", "SUCCESS"]


# -- ETA and countdown ----------------------------------------------------------------


async def test_countdown_waits_for_the_clock(calling: CallingApp,
                                             worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((2, 2), countdown=3)
    await asyncio.sleep(0.3)
    assert not calling.record.calls
    await worker.advance(3.1)
    assert await result.get(timeout=TIMEOUT) == 4


async def test_eta_aware_and_naive(calling: CallingApp, worker: InProcessWorker) -> None:
    now = dt.datetime.fromtimestamp(worker.clock.time(), dt.UTC)
    aware = await calling.add.apply_async((1, 1), eta=now + dt.timedelta(seconds=10))
    naive = await calling.add.apply_async(
        (2, 2), eta=(now + dt.timedelta(seconds=20)).replace(tzinfo=None)
    )
    await asyncio.sleep(0.3)
    assert not calling.record.calls
    await worker.advance(10.5)
    assert await aware.get(timeout=TIMEOUT) == 2
    assert calling.record.calls == [("add", (1, 1))]
    await worker.advance(10)
    assert await naive.get(timeout=TIMEOUT) == 4


async def test_due_tasks_run_while_etas_are_held(calling: CallingApp,
                                                 worker: InProcessWorker) -> None:
    held = [await calling.add.apply_async((i, 0), countdown=30) for i in range(20)]
    now = await calling.add.delay(1, 1)
    assert await now.get(timeout=TIMEOUT) == 2
    await worker.advance(31)
    assert [await r.get(timeout=TIMEOUT) for r in held] == list(range(20))


# -- Expiration -------------------------------------------------------------------------


async def test_expired_task_is_revoked_not_run(calling: CallingApp,
                                               worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((10, 10), countdown=10, expires=5)
    await worker.advance(11)
    with pytest.raises(TaskRevokedError):
        await result.get(timeout=TIMEOUT)
    assert result.state == states.REVOKED
    assert not calling.record.calls


async def test_expires_as_datetime_in_the_future_runs(calling: CallingApp,
                                                      worker: InProcessWorker) -> None:
    now = dt.datetime.fromtimestamp(worker.clock.time(), dt.UTC)
    result = await calling.add.apply_async((10, 10), expires=now + dt.timedelta(days=2))
    assert await result.get(timeout=TIMEOUT) == 20
    soon = await calling.add.apply_async((1, 1), countdown=60, expires=120)
    await worker.advance(61)
    assert await soon.get(timeout=TIMEOUT) == 2


# -- Results and errors ---------------------------------------------------------------------


async def test_exception_reraised_by_type(calling: CallingApp, worker: InProcessWorker) -> None:
    with pytest.raises(ValueError, match="boom"):
        await (await calling.boom.delay()).get(timeout=TIMEOUT)
    with pytest.raises(CustomError) as info:
        await (await calling.custom_boom.delay()).get(timeout=TIMEOUT)
    assert info.value.args == ("custom", 7)


async def test_propagate_false_returns_exception_and_traceback(
    calling: CallingApp, worker: InProcessWorker
) -> None:
    sent = await calling.boom.delay()
    from aiotq import AsyncResult

    result: AsyncResult[Any] = AsyncResult(sent.id, app=calling.app)
    exc = await result.get(propagate=False, timeout=TIMEOUT)
    assert isinstance(exc, ValueError)
    assert result.state == states.FAILURE
    assert result.traceback is not None and "raise ValueError" in result.traceback


async def test_task_retry(calling: CallingApp, worker: InProcessWorker) -> None:
    seen: list[str] = []
    result = await calling.flaky.delay(2)
    getting = asyncio.create_task(
        result.get(on_message=lambda m: seen.append(m["status"]), timeout=TIMEOUT)
    )
    for retries in (1, 2):
        await _eventually(lambda: seen.count("RETRY") == retries)  # noqa: B023
        await worker.advance(1.1)
    assert await getting == 2
    assert seen == ["RETRY", "RETRY", "SUCCESS"]


async def test_custom_headers_reach_the_request(calling: CallingApp,
                                                worker: InProcessWorker) -> None:
    result = await calling.echo_headers.apply_async(headers={"x-custom": "yes"})
    assert await result.get(timeout=TIMEOUT) == {"custom": "yes"}


async def test_ignore_result_stores_nothing(calling: CallingApp,
                                            worker: InProcessWorker) -> None:
    result = await calling.add.apply_async((2, 2), ignore_result=True)
    await worker.join()
    await _eventually(lambda: ("add", (2, 2)) in calling.record.calls)
    assert await result.refresh() == states.PENDING


# -- Serializers and compression ----------------------------------------------------------


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
async def test_serializers(calling: CallingApp, worker: InProcessWorker, serializer: str) -> None:
    result = await calling.add.apply_async((10, 10), serializer=serializer)
    assert await result.get(timeout=TIMEOUT) == 20


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_rich_values_survive(calling: CallingApp, worker: InProcessWorker,
                                   serializer: str) -> None:
    value = {"when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
             "id": uuid.UUID(int=7), "price": decimal.Decimal("1.10"), "blob": b"\x00\xff"}
    result = await calling.echo.apply_async((value,), serializer=serializer)
    assert await result.get(timeout=TIMEOUT) == value


@pytest.mark.parametrize("compression", ["zlib", "gzip", "bzip2", "lzma"])
async def test_compression(calling: CallingApp, worker: InProcessWorker,
                           compression: str) -> None:
    result = await calling.echo.apply_async(("x" * 10_000,), compression=compression)
    assert await result.get(timeout=TIMEOUT) == "x" * 10_000


# -- Connections, groups, routing, priority ----------------------------------------------------


async def test_producer_or_acquire(calling: CallingApp, worker: InProcessWorker) -> None:
    results = []
    async with calling.app.producer_or_acquire() as producer:
        for n in (2, 4, 8, 16):
            results.append(await calling.add.apply_async((n, n), producer=producer))
    assert [await r.get(timeout=TIMEOUT) for r in results] == [4, 8, 16, 32]


async def test_group(calling: CallingApp, worker: InProcessWorker) -> None:
    numbers = [(2, 2), (4, 4), (8, 8), (16, 16)]
    res = await group(calling.add.s(i, j) for i, j in numbers).apply_async()
    assert await res.get(timeout=TIMEOUT) == [4, 8, 16, 32]


async def test_queue_option(calling: CallingApp, worker: InProcessWorker,
                            queue_name: str) -> None:
    result = await calling.add.apply_async((2, 2), queue=queue_name + ".high")
    assert await result.get(timeout=TIMEOUT) == 4


async def test_exchange_routing_key_priority(calling: CallingApp, worker: InProcessWorker,
                                             queue_name: str) -> None:
    result = await calling.add.apply_async((2, 2), exchange=queue_name + ".tasks",
                                           routing_key="math.add", priority=9)
    assert await result.get(timeout=TIMEOUT) == 4


async def _eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_priority_higher_runs_first_with_concurrency_one(
    calling: CallingApp, urls: tuple[str, str | None], queue_name: str,
    resolve_url: Callable[[str], str],
) -> None:
    broker = resolve_url(urls[0])
    backend = urls[1] if urls[1] == "rpc://" else resolve_url(urls[1] or urls[0])
    # Published before a worker consumes the queue, so the broker alone decides the order.
    async with run_in_process(calling.app, broker=broker, backend=backend,
                              queues=[queue_name + ".idle"]):
        results = [await calling.other.apply_async((n,), priority=p)
                   for n, p in [(1, 0), (2, 200), (3, 100), (4, 255), (5, None)]]
        async with Worker(calling.app, [queue_name], concurrency=1, poll_interval=0.05):
            for r in results:
                await r.get(timeout=TIMEOUT)
    assert [n for name, n in calling.record.calls if name == "other"] == [4, 2, 3, 1, 5]

"""The result backend contract (results/base.py), run unchanged against every backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from aiotq.broker.base import BrokerContext, create_broker
from aiotq.clock import SystemClock
from aiotq.codecs import Codecs
from aiotq.results.base import BackendContext, Meta, ResultBackend, create_backend
from aiotq.settings import Settings
from tests.conftest import AMQP_URL, REDIS_URL

BACKENDS = [
    pytest.param(("memory://", "memory://"), id="memory"),
    pytest.param(("sqlite", "sqlite"), id="sqlite"),
    pytest.param((REDIS_URL, REDIS_URL), id="redis", marks=pytest.mark.redis),
    pytest.param((AMQP_URL, "rpc://"), id="rpc", marks=pytest.mark.amqp),
]
pytestmark = pytest.mark.parametrize("urls", BACKENDS)


@pytest.fixture
async def backend(urls: tuple[str, str], resolve_url: Callable[[str], str]
                  ) -> AsyncIterator[ResultBackend]:
    broker_url, backend_url = (resolve_url(u) if u != "rpc://" else u for u in urls)
    settings = Settings(broker_url=broker_url, result_backend=backend_url, result_expires=1.0)
    clock = SystemClock()
    shared: dict[str, object] = {}
    broker = create_broker(BrokerContext(broker_url, settings, clock, shared))
    instance = create_backend(
        BackendContext(backend_url, settings, Codecs(), clock, shared, broker)
    )
    await broker.connect()
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()
        await broker.close()


def meta(task_id: str, status: str, result: object = None) -> Meta:
    return {"task_id": task_id, "status": status, "result": result, "traceback": None,
            "children": [], "date_done": None}


async def collect(backend: ResultBackend, task_ids: list[str], count: int) -> list[Meta]:
    seen: list[Meta] = []
    async with asyncio.timeout(5):
        async for item in backend.watch(task_ids):
            seen.append(item)
            if len(seen) == count:
                break
    return seen


async def test_store_then_get_latest(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    reply_to = await backend.on_task_call(task_id)
    assert await backend.get(task_id) is None
    await backend.store(meta(task_id, "STARTED"), reply_to=reply_to)
    await backend.store(meta(task_id, "SUCCESS", {"answer": 42}), reply_to=reply_to)
    await asyncio.sleep(0.05)
    latest = await backend.get(task_id)
    assert latest is not None
    assert latest["status"] == "SUCCESS" and latest["result"] == {"answer": 42}


async def test_watch_replays_earlier_states_then_live_ones(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    reply_to = await backend.on_task_call(task_id)
    await backend.store(meta(task_id, "PROGRESS", {"progress": 50}), reply_to=reply_to)
    await backend.store(meta(task_id, "PROGRESS", {"progress": 90}), reply_to=reply_to)
    watching = asyncio.create_task(collect(backend, [task_id], 3))
    await asyncio.sleep(0.1)
    await backend.store(meta(task_id, "SUCCESS", "done"), reply_to=reply_to)
    seen = await watching
    assert [(m["status"], m["result"]) for m in seen] == [
        ("PROGRESS", {"progress": 50}), ("PROGRESS", {"progress": 90}), ("SUCCESS", "done"),
    ]


async def test_watch_many_tasks_at_once(backend: ResultBackend) -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    replies = [await backend.on_task_call(task_id) for task_id in ids]
    watching = asyncio.create_task(collect(backend, ids, 5))
    await asyncio.sleep(0.05)
    for task_id, reply_to in zip(reversed(ids), reversed(replies), strict=True):
        await backend.store(meta(task_id, "SUCCESS", task_id), reply_to=reply_to)
    seen = await watching
    assert sorted(m["task_id"] for m in seen) == sorted(ids)
    assert all(m["result"] == m["task_id"] for m in seen)


async def test_forget(backend: ResultBackend) -> None:
    task_id = str(uuid.uuid4())
    reply_to = await backend.on_task_call(task_id)
    await backend.store(meta(task_id, "SUCCESS", 1), reply_to=reply_to)
    await asyncio.sleep(0.05)
    await backend.forget(task_id)
    assert await backend.get(task_id) is None

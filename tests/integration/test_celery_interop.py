"""Celery on the wire: the real ``celery`` package and a real RabbitMQ, both directions.

* aiotq client -> Celery 5 worker (a subprocess running tests/apps/celery_proj.py): the
  worker runs what aiotq publishes, and aiotq reads the results it stores with Celery's
  Redis backend and sends with Celery's rpc:// backend.
* Celery client -> aiotq worker (in this event loop): Celery's sync API runs in a thread,
  and its ``AsyncResult`` reads what aiotq's Redis backend stored.

Every test has its own queue (deleted at the end of the session) and deletes the Redis keys
of its tasks. docs/celery.md shows this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiormq
import celery
import celery.exceptions
import pytest
import redis
import redis.asyncio

from aiotq import App, AsyncResult, TaskRevokedError
from aiotq.broker.amqp import AMQPBroker
from aiotq.clock import SystemClock
from aiotq.testing import run_in_process
from tests.apps import celery_proj
from tests.conftest import AMQP_PREFIXES, AMQP_URL, REDIS_URL, require_service

# The Celery client of these tests talks to the servers the rest of the suite uses.
celery_proj.app.conf.update(broker_url=AMQP_URL, result_backend=REDIS_URL)

pytestmark = [pytest.mark.amqp, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
#: aiotq's queues as Celery declares its own: plain, no arguments.
CELERY_QUEUES = {"max_priority": None, "queue_arguments": {}}

# The aiotq side of the same project: in the Celery-worker tests it only calls these tasks,
# in the Celery-client tests its worker runs them.
app = App("proj", result_backend_transport_options={"follow_celery_results": True})
recorded: list[Any] = []


@app.task(name="proj.add")
async def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.fail")
async def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="proj.record")
async def record(value: Any) -> Any:
    recorded.append(value)
    return value


@pytest.fixture
def queue(queue_name: str) -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("Redis", "127.0.0.1", 6379)
    AMQP_PREFIXES.add(queue_name)  # its queue and exchange go when the session ends
    return queue_name


@pytest.fixture
def task_ids() -> Iterator[list[str]]:
    """Ids of the tasks a test ran; their result keys are deleted afterwards."""
    ids: list[str] = []
    yield ids
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for task_id in ids:
            client.delete(f"celery-task-meta-{task_id}", f"aiotq:states:{task_id}")
    finally:
        client.close()


@contextlib.asynccontextmanager
async def calling(backend: str, queue: str) -> AsyncIterator[App]:
    """The aiotq app as a client of ``queue`` (publishing there by default)."""
    conf = app.conf
    saved = conf.forced_urls, conf.task_default_queue
    conf.forced_urls, conf.task_default_queue = (AMQP_URL, backend), queue
    try:
        yield app
    finally:
        await app.close()
        conf.forced_urls, conf.task_default_queue = saved


async def consumers(queue: str) -> int:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            declared = await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        return int(declared.consumer_count or 0)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def celery_worker(queue: str, tmp_path: Path, *, backend: str = REDIS_URL,
                        arguments: dict[str, Any] | None = None) -> AsyncIterator[Path]:
    """A real Celery worker consuming ``queue`` (declared with ``arguments``, or as a plain
    queue); yields the file its ``proj.record`` runs are written to."""
    runs, log = tmp_path / "runs.txt", tmp_path / "celery.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CELERY_PROJ_BROKER": AMQP_URL,
           "CELERY_PROJ_BACKEND": backend, "CELERY_PROJ_QUEUE": queue,
           "CELERY_PROJ_RUNS": str(runs)}
    if arguments is not None:
        env["CELERY_PROJ_QUEUE_ARGUMENTS"] = json.dumps(arguments)
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "celery", "-A", "tests.apps.celery_proj", "worker",
            "-P", "solo", "-Q", queue, "--without-heartbeat", "--without-mingle",
            "--without-gossip", "-l", "warning", cwd=ROOT, env=env, stdout=output,
            stderr=output)
    try:
        async with asyncio.timeout(30):
            while await consumers(queue) == 0:
                if process.returncode is not None:
                    pytest.fail(f"the Celery worker exited:\n{log.read_text()}")
                await asyncio.sleep(0.1)
        yield runs
    finally:
        # Killed: its warm and cold shutdowns both take 10 s here (its event loop waits out
        # a poll), and every task of the test has been settled by now.
        if process.returncode is None:
            process.kill()
        await process.wait()


async def subscribers(channel: str) -> int:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        [(_, count)] = await client.pubsub_numsub(channel)
        return int(count)
    finally:
        await client.aclose()


def lineage(result: Any) -> list[str]:
    """The ids of a chain's results, last first (aiotq's and Celery's alike)."""
    ids = []
    while result is not None:
        ids.append(result.id)
        result = result.parent
    return ids


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def wait_for_lines(path: Path, count: int) -> list[str]:
    async with asyncio.timeout(TIMEOUT):
        while len(lines(path)) < count:
            await asyncio.sleep(0.05)
    return lines(path)


# -- aiotq client -> Celery worker ----------------------------------------------------


async def test_celery_worker_runs_send_task_and_aiotq_reads_its_redis_result(
    queue: str, tmp_path: Path, task_ids: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with celery_worker(queue, tmp_path), calling(REDIS_URL, queue) as client:
        with caplog.at_level(logging.WARNING, logger="aiotq.amqp"):
            result = await client.send_task("proj.add", (2, 2))
        task_ids.append(result.id)
        assert await result.get(timeout=TIMEOUT) == 4
        # Celery declared the queue without x-max-priority: aiotq uses it as it is.
        assert "exists with other arguments" in caplog.text

        failed = await client.send_task("proj.fail", ("boom",))
        task_ids.append(failed.id)
        with pytest.raises(ValueError, match="boom"):
            await failed.get(timeout=TIMEOUT)
        assert failed.state == "FAILURE" and "ValueError: boom" in (failed.traceback or "")

        for compression in ("gzip", "zlib", "bzip2", "lzma"):
            packed = await client.send_task("proj.add", (3, 4), compression=compression)
            task_ids.append(packed.id)
            assert await packed.get(timeout=TIMEOUT) == 7, compression


async def test_celery_worker_honours_countdown_expires_link_and_link_error(
    queue: str, tmp_path: Path, task_ids: list[str]
) -> None:
    async with celery_worker(queue, tmp_path) as runs, calling(REDIS_URL, queue):
        callback, errback = record.s().set(queue=queue), record.s().set(queue=queue)
        task_ids.extend([callback.freeze(), errback.freeze()])

        started = time.monotonic()
        result = await add.apply_async((2, 3), countdown=1, expires=60, link=callback)
        task_ids.append(result.id)
        assert await result.get(timeout=TIMEOUT) == 5
        assert time.monotonic() - started >= 1
        # Celery ran the callback with the result, under the id aiotq gave it, and stored it
        # as the task's child (a result tuple, read back as an id).
        assert await AsyncResult(str(callback.id), app).get(timeout=TIMEOUT) == 5
        assert [child.id for child in result.children] == [callback.id]

        failed = await fail.apply_async(("boom",), link_error=errback)
        task_ids.append(failed.id)
        with pytest.raises(ValueError):
            await failed.get(timeout=TIMEOUT)
        # An errback gets the id of the task that failed.
        assert await AsyncResult(str(errback.id), app).get(timeout=TIMEOUT) == failed.id
        assert await wait_for_lines(runs, 2) == ["5", failed.id]

        expired = await add.apply_async(
            (1, 1), expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        task_ids.append(expired.id)
        with pytest.raises(TaskRevokedError):
            await expired.get(timeout=TIMEOUT)
        assert expired.state == "REVOKED"


async def test_celery_worker_sends_results_to_the_aiotq_rpc_reply_queue(
    queue: str, tmp_path: Path
) -> None:
    async with celery_worker(queue, tmp_path, backend="rpc://"), \
            calling("rpc://", queue) as client:
        result = await client.send_task("proj.add", (2, 2))
        assert await result.get(timeout=TIMEOUT) == 4
        failed = await client.send_task("proj.fail", ("boom",))
        with pytest.raises(ValueError, match="boom"):
            await failed.get(timeout=TIMEOUT)


async def test_celery_worker_runs_an_aiotq_chain(
    queue: str, tmp_path: Path, task_ids: list[str]
) -> None:
    async with celery_worker(queue, tmp_path), calling(REDIS_URL, queue):
        result = await (add.s(2, 2) | add.s(4) | add.s(8)).apply_async()
        task_ids.extend(lineage(result))
        assert await result.get(timeout=TIMEOUT) == 16


# Celery 5.7's Redis backend stores with redis-py's deprecated setex().
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
async def test_get_follows_the_states_celerys_redis_backend_stores(
    queue: str, task_ids: list[str]
) -> None:
    # Celery's backend, as its worker uses it: SET and PUBLISH, no aiotq state stream.
    task_id = str(uuid.uuid4())
    task_ids.append(task_id)
    store = functools.partial(asyncio.to_thread, celery_proj.app.backend.store_result,
                              task_id)
    await store({"progress": 50}, "PROGRESS")
    seen: list[dict[str, Any]] = []
    async with calling(REDIS_URL, queue):
        waiting = asyncio.create_task(
            AsyncResult(task_id, app).get(timeout=TIMEOUT, on_message=seen.append))
        async with asyncio.timeout(TIMEOUT):
            while not seen:  # the state stored before get(), read once it subscribed
                await asyncio.sleep(0.01)
        await store(4, "SUCCESS")
        assert await waiting == 4

        # A get() still waiting when the app closes: closing stops following its channel.
        stray_id = str(uuid.uuid4())
        stray = asyncio.create_task(AsyncResult(stray_id, app).get(timeout=TIMEOUT))
        async with asyncio.timeout(TIMEOUT):
            while await subscribers(f"celery-task-meta-{stray_id}") == 0:
                await asyncio.sleep(0.01)
    stray.cancel()
    await asyncio.gather(stray, return_exceptions=True)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [(m["status"], m["result"]) for m in seen] == [("PROGRESS", {"progress": 50}),
                                                          ("SUCCESS", 4)]


async def test_celery_worker_takes_aiotq_priorities_on_a_queue_aiotq_declared(
    queue: str, tmp_path: Path, task_ids: list[str]
) -> None:
    async with calling(REDIS_URL, queue) as client:
        # Sent before any worker runs: aiotq declares the queue (x-max-priority 10) and
        # scales 0-255 onto 0-10; Celery declaring it the same way accepts the queue.
        for priority in (0, 255, 128):
            task_ids.append((await record.apply_async((priority,), priority=priority)).id)
        arguments = await cast(AMQPBroker, client.broker).task_queue_arguments()
        assert arguments["x-max-priority"] == 10
        async with celery_worker(queue, tmp_path, arguments=arguments) as runs:
            assert await wait_for_lines(runs, 3) == ["255", "128", "0"]
            assert await AsyncResult(task_ids[0], app).get(timeout=TIMEOUT) == 0


# -- Celery client -> aiotq worker ----------------------------------------------------


@contextlib.asynccontextmanager
async def aiotq_worker(queue: str, backend: str = REDIS_URL) -> AsyncIterator[None]:
    """aiotq's worker on ``queue``, declared as Celery declares queues (no arguments), so
    that the Celery client's own declaration of it agrees."""
    recorded.clear()
    try:
        async with run_in_process(app, broker=AMQP_URL, backend=backend, clock=SystemClock(),
                                  queues=[queue],
                                  broker_transport_options=CELERY_QUEUES):
            yield
    finally:
        celery_proj.app.close()


async def test_aiotq_worker_runs_celery_send_task(queue: str, task_ids: list[str]) -> None:
    def client() -> None:
        result = celery_proj.app.send_task("proj.add", (2, 2), queue=queue)
        task_ids.append(result.id)
        assert result.get(timeout=TIMEOUT) == 4

        failed = celery_proj.app.send_task("proj.fail", ("boom",), queue=queue)
        task_ids.append(failed.id)
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=TIMEOUT)
        assert failed.state == "FAILURE" and "ValueError: boom" in failed.traceback

        for compression in ("gzip", "zlib", "bzip2", "lzma"):
            packed = celery_proj.app.send_task("proj.add", (3, 4), queue=queue,
                                               compression=compression)
            task_ids.append(packed.id)
            assert packed.get(timeout=TIMEOUT) == 7, compression

        # Expired by the time its countdown is up: aiotq revokes it, as Celery would.
        expired = celery_proj.app.send_task("proj.add", (1, 1), queue=queue, countdown=1,
                                            expires=0.5)
        task_ids.append(expired.id)
        with pytest.raises(celery.exceptions.TaskRevokedError):
            expired.get(timeout=TIMEOUT)

    async with aiotq_worker(queue):
        await asyncio.to_thread(client)


async def test_aiotq_worker_honours_celery_countdown_expires_link_and_link_error(
    queue: str, task_ids: list[str]
) -> None:
    def client() -> None:
        callback, errback = (celery_proj.record.s().set(queue=queue) for _ in range(2))
        callback_id, errback_id = callback.freeze().id, errback.freeze().id
        task_ids.extend([callback_id, errback_id])

        started = time.monotonic()
        result = celery_proj.add.apply_async((2, 3), countdown=1, expires=60, link=callback,
                                             queue=queue)
        task_ids.append(result.id)
        assert result.get(timeout=TIMEOUT) == 5
        assert time.monotonic() - started >= 1
        # aiotq ran the callback and stored it as the task's child, in Celery's shape.
        assert [child.id for child in result.children] == [callback_id]
        assert result.children[0].get(timeout=TIMEOUT) == 5

        failed = celery_proj.fail.apply_async(("boom",), link_error=errback, queue=queue)
        task_ids.append(failed.id)
        with pytest.raises(ValueError):
            failed.get(timeout=TIMEOUT)
        assert celery_proj.app.AsyncResult(errback_id).get(timeout=TIMEOUT) == failed.id

    async with aiotq_worker(queue):
        await asyncio.to_thread(client)
        assert recorded == [5, task_ids[-1]]



async def test_aiotq_worker_runs_a_celery_chain(queue: str, task_ids: list[str]) -> None:
    def client() -> None:
        result = celery.chain(celery_proj.add.s(2, 2).set(queue=queue),
                              celery_proj.add.s(4).set(queue=queue)).apply_async()
        task_ids.extend(lineage(result))
        assert result.get(timeout=TIMEOUT) == 8

    async with aiotq_worker(queue):
        await asyncio.to_thread(client)


async def test_aiotq_worker_sends_results_to_a_celery_rpc_client(queue: str) -> None:
    rpc_client = celery.Celery("client", broker=AMQP_URL, backend="rpc://")

    def client() -> None:
        try:
            result = rpc_client.send_task("proj.add", (2, 2), queue=queue)
            assert result.get(timeout=TIMEOUT) == 4
            failed = rpc_client.send_task("proj.fail", ("boom",), queue=queue)
            with pytest.raises(ValueError, match="boom"):
                failed.get(timeout=TIMEOUT)
        finally:
            # Its reply queue's consumer (per thread) has a connection app.close() leaves.
            rpc_client.backend.result_consumer.stop()

    try:
        async with aiotq_worker(queue, backend="rpc://"):
            await asyncio.to_thread(client)
    finally:
        rpc_client.close()

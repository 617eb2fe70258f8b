"""Retry policy, ETA heap, routing and the envelope's framing."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest

from aiotq.eta import EtaHeap
from aiotq.exceptions import MessageError, OperationalError, TransportError
from aiotq.message import Message, new_id, origin, pack, unpack, validate
from aiotq.retry import RetryPolicy, retry_after
from aiotq.routing import QueueSpec, make_route, topic_matches


def test_default_policy_delays_match_calling_rst() -> None:
    assert list(RetryPolicy().delays()) == [0.0, 0.2, 0.2]
    assert list(RetryPolicy(5, 0.1, 0.5, 1.0).delays()) == [0.1, 0.6, 1.0, 1.0, 1.0]
    assert list(RetryPolicy(0).delays()) == []


async def test_retry_after_retries_then_raises_operational_error() -> None:
    waited: list[float] = []
    attempts = 0

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    async def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise TransportError("connection refused")

    with pytest.raises(OperationalError) as info:
        await retry_after(TransportError("refused"), failing, RetryPolicy(), sleep)
    assert attempts == 3 and waited == [0.0, 0.2, 0.2]
    assert str(info.value.__cause__) == "connection refused"


async def test_retry_after_without_retries_raises_the_first_error() -> None:
    async def never() -> None:
        raise AssertionError("no retry was allowed")

    with pytest.raises(OperationalError) as info:
        await retry_after(TransportError("refused"), never, RetryPolicy(0), asyncio.sleep)
    assert str(info.value.__cause__) == "refused"


async def test_retry_after_recovers() -> None:
    outcomes = [TransportError("down again"), "ok"]

    async def flaky() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert await retry_after(TransportError("down"), flaky, RetryPolicy(),
                             lambda s: asyncio.sleep(0)) == "ok"


def test_eta_heap_orders_by_due_then_arrival() -> None:
    heap: EtaHeap[str] = EtaHeap()
    assert heap.push(10.0, "b") is True
    assert heap.push(5.0, "a") is True
    assert heap.push(10.0, "c") is False
    assert heap.next_due() == 5.0
    assert heap.pop_due(4.9) == []
    assert heap.pop_due(10.0) == ["a", "b", "c"]
    assert heap.next_due() is None and len(heap) == 0
    heap.push(1.0, "x")
    assert heap.drain() == ["x"] and len(heap) == 0


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [("math.#", "math.add", True), ("math.#", "math", True), ("math.*", "math.add", True),
     ("math.*", "math.add.x", False), ("#", "a.b", True), ("*.add", "math.add", True),
     ("a.#.z", "a.z", True), ("a.#.z", "a.b.c.z", True), ("math.#", "mathx", False)],
)
def test_topic_matching(binding: str, key: str, expected: bool) -> None:
    assert topic_matches(binding, key) is expected


def test_routes_through_bindings() -> None:
    queues = [QueueSpec("math", "tasks", "topic", "math.#"), QueueSpec("direct-q", "d")]
    route = make_route(queue=None, exchange="tasks", routing_key="math.add",
                       exchange_type=None, queues=queues, default_queue="celery")
    assert (route.queue, route.exchange, route.routing_key, route.exchange_type) == (
        "math", "tasks", "math.add", "topic")
    direct = make_route(queue=None, exchange="d", routing_key="direct-q", exchange_type=None,
                        queues=queues, default_queue="celery")
    assert direct.queue == "direct-q"
    plain = make_route(queue="q", exchange=None, routing_key=None, exchange_type=None,
                       queues=queues, default_queue="celery")
    assert (plain.queue, plain.exchange, plain.routing_key) == ("q", None, "q")


def test_pack_round_trip_and_garbage() -> None:
    message = Message({"id": "1", "task": "t"}, b"body", "application/json",
                      correlation_id="1", reply_to="r", priority=3)
    assert unpack(pack(message)) == message
    with pytest.raises(MessageError):
        unpack(b"\x00garbage")


@pytest.mark.parametrize(
    "headers",
    [{"task": "t"}, {"id": "1"}, {"id": "1", "task": 3}, {"id": "1", "task": "t", "eta": "x"},
     {"id": "1", "task": "t", "retries": "many"}],
)
def test_validate_rejects_malformed_headers(headers: dict[str, object]) -> None:
    with pytest.raises(MessageError):
        validate(Message(headers, b"", "application/json"))


def test_new_id_is_an_rfc_4122_version_4_uuid_string() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_origin_is_the_pid_of_a_forked_child() -> None:
    assert origin() == f"{os.getpid()}@{socket.gethostname()}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its origin and leaves at once
        os.write(write, origin().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as reader:
        assert reader.read().decode() == f"{pid}@{socket.gethostname()}"

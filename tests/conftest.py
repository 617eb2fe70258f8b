"""Shared fixtures: which brokers are reachable, and a unique queue per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("AIOTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AIOTQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REQUIRE_SERVICES = os.environ.get("AIOTQ_REQUIRE_SERVICES") == "1"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test when the service is not reachable, or fail under AIOTQ_REQUIRE_SERVICES=1."""
    if _answers(host, port):
        return
    missing_service(f"{name} is not reachable at {host}:{port}")


def require_binary(name: str) -> None:
    """Skip the test when the program ``name`` is not installed, or fail under
    AIOTQ_REQUIRE_SERVICES=1 (tests that run a private server of their own)."""
    if shutil.which(name) is None:
        missing_service(f"no {name} binary to run a private server")


def missing_service(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and AIOTQ_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{message} (set AIOTQ_REQUIRE_SERVICES=1 to make this a failure)")


def broker_urls() -> list[object]:
    """Every broker of the contract suites, each marked so it can be selected with -m."""
    return [
        pytest.param("memory://", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param(REDIS_URL, id="redis", marks=pytest.mark.redis),
        pytest.param(AMQP_URL, id="amqp", marks=pytest.mark.amqp),
    ]


@pytest.fixture
def queue_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def resolve_url(tmp_path: Path, queue_name: str) -> Iterator[object]:
    """Turn a contract-suite parameter into a usable URL, skipping what is not reachable.

    Afterwards the Redis keys of this test's queues are deleted (the shared server stays as
    it was found)."""
    used_redis = False

    def resolve(url: str) -> str:
        nonlocal used_redis
        if url == "sqlite":
            return f"sqlite:///{tmp_path / 'aiotq.db'}"
        if url.startswith("redis"):
            require_service("Redis", "127.0.0.1", 6379)
            used_redis = True
        if url.startswith("amqp"):
            require_service("RabbitMQ", "127.0.0.1", 5672)
            AMQP_PREFIXES.add(queue_name)
        return url

    yield resolve
    if used_redis:
        delete_redis_keys(f"aiotq:{{{queue_name}*")


#: Queue names the tests used on RabbitMQ: their queues and exchanges (and the delay and
#: dead-letter queues the broker derived from them) are deleted when the session ends.
AMQP_PREFIXES: set[str] = set()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if AMQP_PREFIXES and shutil.which("rabbitmqctl"):
        asyncio.run(_delete_amqp_entities(tuple(AMQP_PREFIXES)))


def _rabbitmq_names(kind: str) -> list[str]:
    listing = subprocess.run(["rabbitmqctl", f"list_{kind}", "name", "-q",
                              "--no-table-headers"], capture_output=True, text=True,
                             timeout=60, check=False)
    return listing.stdout.split()


async def _delete_amqp_entities(prefixes: tuple[str, ...]) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in _rabbitmq_names("queues"):
            if name.startswith(prefixes):
                await channel.queue_delete(name)
        for name in _rabbitmq_names("exchanges"):
            if name.startswith(prefixes):
                await channel.exchange_delete(name)


def delete_redis_keys(pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

"""aiotq's Redis connections: commands packed by hiredis, in C, into the bytes redis-py's
Python packer makes, and written without a task of their own but with the same timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError, TimeoutError

from aiotq._redis import connect

ARGS = ("EVALSHA", "f" * 40, 2, b"aiotq:k", "kë", 1.5, 0.1, 1732650000.123456, -3, 10**20,
        b"\x00\xff")


def test_commands_pack_in_c_into_the_same_bytes() -> None:
    connection = connect("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    assert type(connection).pack_command is not Connection.pack_command
    assert isinstance(connection, Connection)
    in_python = b"".join(Connection.pack_command(connection, *ARGS))
    assert b"".join(connection.pack_command(*ARGS)) == in_python
    pipeline = [ARGS, ("SCRIPT LOAD", "return 1"), ("XACK", "s", "g", "1-0")]
    assert b"".join(connection.pack_commands(pipeline)) == b"".join(
        Connection.pack_commands(connection, pipeline))


@pytest.mark.parametrize("bad", [None, True, object()])
def test_a_bad_argument_is_still_a_data_error(bad: object) -> None:
    connection = connect("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    with pytest.raises(DataError):
        connection.pack_command("SET", "k", bad)


@pytest.mark.parametrize(("url", "base"), [
    ("unix:///tmp/aiotq-none.sock", UnixDomainSocketConnection),
    ("rediss://127.0.0.1:6379/0", SSLConnection),
])
def test_the_url_still_chooses_the_transport(url: str, base: type[AbstractConnection]) -> None:
    connection_class = connect(url).connection_pool.connection_class
    assert issubclass(connection_class, base)
    assert connection_class.pack_command is not Connection.pack_command


class FakeRedis:
    """Answers PING with PONG and other commands with OK, on loopback; it stops reading at
    the first command named ``deaf_to``, so what is written after it piles up in the
    sockets."""

    def __init__(self, deaf_to: bytes | None = None) -> None:
        self._deaf_to = deaf_to
        self._stop = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        while header := await reader.readline():
            args = []
            for _ in range(int(header[1:])):
                size = int((await reader.readline())[1:])
                args.append((await reader.readexactly(size + 2))[:-2])
                if args[0] == self._deaf_to:
                    await self._stop.wait()
                    writer.close()
                    return
            writer.write(b"+PONG\r\n" if args[0] == b"PING" else b"+OK\r\n")
        writer.close()

    @contextlib.asynccontextmanager
    async def url(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"redis://127.0.0.1:{port}/0?socket_timeout=0.5"
        finally:
            self._stop.set()
            server.close()
            await asyncio.wait_for(asyncio.gather(*self._handlers), 5)


async def test_commands_are_written_without_a_task() -> None:
    written_as_tasks: list[str] = []

    def task_factory(loop: asyncio.AbstractEventLoop, coro: Any,
                     **kwargs: Any) -> asyncio.Task[Any]:
        if "send_packed_command" in getattr(coro, "__qualname__", ""):
            written_as_tasks.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop = asyncio.get_running_loop()
    async with FakeRedis().url() as url:
        client = connect(url)
        try:
            assert await client.execute_command("PING") is True  # connected
            loop.set_task_factory(task_factory)
            for _ in range(3):
                assert await client.execute_command("PING") is True
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("PING")
            pipe.execute_command("SET", "k", "v")
            assert await pipe.execute() == [True, True]
        finally:
            loop.set_task_factory(None)
            await client.aclose()
    assert written_as_tasks == []


async def test_a_write_the_socket_does_not_take_still_times_out() -> None:
    async with FakeRedis(deaf_to=b"SET").url() as url:
        client = connect(url)
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match="writing"):
                await client.execute_command("SET", "k", b"x" * (64 << 20))
        finally:
            await client.aclose()
        assert time.monotonic() - started < 10

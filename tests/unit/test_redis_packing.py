"""Redis commands are packed by hiredis, in C, into the bytes redis-py's Python packer makes."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError

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

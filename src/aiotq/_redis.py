"""What the Redis broker and result backend share: the client, error translation, scripts
and a pipeline that batches concurrent commands into one round trip."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from importlib import resources
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError, RedisError

from ._batching import Batcher
from .exceptions import TransportError

T = TypeVar("T")

#: A command sender: ``client.execute_command`` or :meth:`Pipeliner.call`.
Call = Callable[..., Awaitable[Any]]

#: Blocking reads never wait longer than this, so a dead connection or a due ETA is noticed.
MAX_BLOCK = 1.0


def connect(url: str) -> Redis:
    """A pooled client for ``url``. Query-string options of the URL override these defaults.

    One immediate retry on a fresh connection covers a pooled socket that died with a
    restarted server; longer outages surface as :class:`TransportError` to the caller's own
    retry policy instead of stalling inside redis-py's backoff.
    """
    client: Redis = Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 1),
    )
    pool = client.connection_pool
    pool.connection_class = _lean(pool.connection_class)
    return client


class _LeanConnection(AbstractConnection):
    """Two shortcuts through redis-py's asyncio connection; the bytes sent, the errors and
    the timeouts stay the same.

    * Commands are packed with hiredis's C packer, as redis-py's sync client does. Its
      asyncio client packs them in Python, an ``isinstance`` and an ``encode`` per argument,
      and aiotq's scripts take a dozen arguments: a fifth of a Redis worker's Python calls
      per round trip.
    * A command is written at once. With a socket timeout, redis-py writes every command
      through ``asyncio.wait_for``, which runs the write as a task of its own: two more
      turns of the event loop per command, while the timeout can only strike on a write
      the socket did not take. Such a write still waits for its drain under the timeout.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed

    async def send_packed_command(self, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        writer = self._writer
        if (writer is None or not self.is_connected or self.health_check_interval
                or isinstance(command, str) or writer.transport.is_closing()
                or writer.transport.get_write_buffer_size()):
            await super().send_packed_command(command, check_health)
            return
        writer.writelines([command] if isinstance(command, bytes) else command)
        if writer.transport.get_write_buffer_size():
            # What the socket did not take drains under redis-py's timeout and errors.
            await super().send_packed_command([], check_health=False)


_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _lean(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (TCP, TLS or unix socket, as the URL chose) with :class:`_LeanConnection`'s
    shortcuts."""
    if base not in _LEAN:
        _LEAN[base] = type(base.__name__, (_LeanConnection, base), {})
    return _LEAN[base]


class Link:
    """A client made on first use (on the event loop that uses it), with its pipeliner."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Redis | None = None
        self._pipeliner: Pipeliner | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            self._client = connect(self._url)
        return self._client

    @property
    def pipeliner(self) -> Pipeliner:
        if self._pipeliner is None:
            self._pipeliner = Pipeliner(self.client)
        return self._pipeliner

    async def ping(self) -> None:
        with transport_errors("connect"):
            await command(self.client)("PING")

    async def close(self) -> None:
        if self._pipeliner is not None:
            await self._pipeliner.close()
            self._pipeliner = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def command(client: Redis) -> Call:
    """``client.execute_command``, typed (redis-py leaves it unannotated)."""
    return cast(Call, client.execute_command)


def block_ms(client: Redis, wanted: float) -> int:
    """How long a blocking read may wait: ``wanted`` seconds, well within the socket timeout."""
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        wanted = min(wanted, float(socket_timeout) / 2)
    return max(1, int(wanted * 1000))


@contextlib.contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """Translate redis-py's errors into :class:`TransportError`, chaining the original."""
    try:
        yield
    except RedisError as exc:
        raise TransportError(f"Redis {what} failed: {exc}") from exc


def stream_id(raw: bytes) -> tuple[int, int]:
    """A stream entry id as a sortable pair."""
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq or 0)


def text(value: float | int | str) -> str:
    """A number as Redis reads it back exactly (``repr`` round-trips a float)."""
    return repr(value) if isinstance(value, float) else str(value)


class Scripts:
    """Lua scripts shipped as package data, run by SHA and loaded again when Redis lost them
    (a restarted server, ``SCRIPT FLUSH``)."""

    def __init__(self, package: str, folder: str, names: tuple[str, ...]) -> None:
        root = resources.files(package).joinpath(folder)
        self._sources = {name: root.joinpath(f"{name}.lua").read_text("utf-8") for name in names}
        self._shas = {
            name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
            for name, source in self._sources.items()
        }

    async def run(self, call: Call, name: str, keys: list[str] | list[bytes],
                  args: list[Any]) -> Any:
        """Run script ``name`` through ``call``; raises redis-py's errors untranslated."""
        try:
            return await call("EVALSHA", self._shas[name], len(keys), *keys, *args)
        except NoScriptError:
            await call("SCRIPT", "LOAD", self._sources[name])
            return await call("EVALSHA", self._shas[name], len(keys), *keys, *args)


class Pipeliner:
    """Sends every command issued while a round trip is in flight in the next one.

    Concurrent publishes and acks thus share pipelines without their callers knowing:
    ``await pipeliner.call("XADD", ...)`` returns that command's own reply or raises its own
    error.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._batcher: Batcher[tuple[Any, ...], Any] = Batcher(self._send)

    async def call(self, *args: Any) -> Any:
        return await self._batcher.submit(args)

    async def close(self) -> None:
        await self._batcher.close()

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

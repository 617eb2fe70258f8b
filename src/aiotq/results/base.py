"""The one interface every result backend implements.

A result *meta* is the dict of DESIGN.md: ``{"task_id", "status", "result", "traceback",
"children", "date_done"}`` (plus ``"name"`` and the like). Backends store and stream these
dicts, serialized with the app's ``result_serializer``.

Contract, for every backend:

* ``store(meta)`` records the task's newest state and appends it to the task's state
  history; a ready state (SUCCESS, FAILURE, REVOKED) is final. Both expire after
  ``result_expires``.
* ``watch(task_ids)`` yields every stored state of those tasks, oldest first, starting with
  the ones stored before the call, then new ones as they are stored (pushed, not polled),
  each exactly once, until the caller stops iterating.
* ``on_task_call(task_id)`` runs before a task is published and returns the ``reply_to``
  address the message should carry (the rpc backend's reply queue), or None.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..broker.base import Broker, load_class
from ..clock import Clock
from ..codecs import Codecs
from ..settings import Settings

Meta = dict[str, Any]


@dataclass(slots=True)
class BackendContext:
    url: str
    settings: Settings
    codecs: Codecs
    clock: Clock
    shared: dict[str, Any] = field(default_factory=dict)
    #: The app's broker on this event loop (the rpc backend shares its connection).
    broker: Broker | None = None

    def encode(self, meta: Meta) -> bytes:
        payload, _, _ = self.codecs.encode(meta, self.settings.result_serializer)
        return payload

    def decode(self, payload: bytes) -> Meta:
        serializer = self.codecs.serializer(self.settings.result_serializer)
        value = self.codecs.decode(payload, serializer.content_type, None)
        if not isinstance(value, dict):
            raise TypeError("a result meta must be a mapping")
        return value


class ResultBackend(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def on_task_call(self, task_id: str) -> str | None: ...

    async def store(self, meta: Meta, *, reply_to: str | None = None) -> None: ...

    async def get(self, task_id: str) -> Meta | None:
        """The newest state of ``task_id``, or None when nothing is known."""

    def watch(self, task_ids: Sequence[str]) -> AsyncGenerator[Meta, None]: ...

    async def forget(self, task_id: str) -> None: ...


BACKENDS = {
    "memory": "aiotq.results.memory:MemoryBackend",
    "sqlite": "aiotq.results.sqlite:SQLiteBackend",
    "redis": "aiotq.results.redis:RedisBackend",
    "rediss": "aiotq.results.redis:RedisBackend",
    "rpc": "aiotq.results.rpc:RPCBackend",
}


def create_backend(context: BackendContext) -> ResultBackend:
    cls = load_class(context.url, BACKENDS, "result backend")
    backend: ResultBackend = cls(context)
    return backend

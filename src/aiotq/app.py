"""App: settings, the task registry, codecs, and the connections of each event loop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import traceback as tb
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from . import states
from .broker.base import Broker, BrokerContext, Producer, create_broker
from .calling import send
from .canvas import Signature
from .clock import Clock, SystemClock
from .codecs import Codecs, Decoder, Encoder
from .result import AsyncResult as Result
from .result import exception_to_result
from .results.base import BackendContext, Meta, ResultBackend, create_backend
from .settings import Settings
from .task import Task

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(slots=True)
class _Connections:
    """The broker and backend of one event loop (connections are bound to their loop)."""

    broker: Broker
    backend: ResultBackend


class TaskDecorator:
    """What ``@app.task(...)`` returns: keeps the function's signature in the Task type."""

    def __init__(self, register: Callable[[Callable[..., Any]], Task[Any, Any]]) -> None:
        self._register = register

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        return self._register(fn)


class BoundTaskDecorator:
    """``@app.task(bind=True)``: the function's first parameter is the task itself."""

    def __init__(self, register: Callable[[Callable[..., Any]], Task[Any, Any]]) -> None:
        self._register = register

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
                 ) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R]) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        return self._register(fn)


class App:
    """An aiotq application: ``app = App("proj", broker="redis://...")``.

    ``async with app:`` (or ``await app.close()``) owns the connections; the first publish
    connects lazily. One App may be used from several event loops in turn: each loop gets
    its own connections.
    """

    def __init__(self, main: str | None = None, *, broker: str | None = None,
                 backend: str | None = None, clock: Clock | None = None,
                 **settings: Any) -> None:
        self.main = main
        self.conf = Settings()
        self.conf.update(settings)
        if broker is not None:
            self.conf.broker_url = broker
        if backend is not None:
            self.conf.result_backend = backend
        self.clock: Clock = clock or SystemClock()
        self.codecs = Codecs()
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: In-process state the memory broker and backend share across this app's loops.
        self.shared: dict[str, Any] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections] = (
            weakref.WeakKeyDictionary()
        )
        # The loop looked up last and its connections: every publish asks for them, and a
        # WeakKeyDictionary lookup (a new weakref per call) costs more than this comparison.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], _Connections] | None = None

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} broker={self.conf.broker}>"

    # -- tasks --

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, *, bind: Literal[True], name: str | None = None,
             **options: Any) -> BoundTaskDecorator: ...

    @overload
    def task(self, *, bind: Literal[False] = False, name: str | None = None,
             **options: Any) -> TaskDecorator: ...

    def task(self, *fn: Callable[..., Any], bind: bool = False, name: str | None = None,
             **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, queue=...)``.

        ``async def`` tasks run on the worker's loop; plain ``def`` tasks in its thread pool.
        """

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or self.gen_task_name(func)
            task: Task[Any, Any] = Task(self, func, task_name, bind, options)
            self.tasks[task_name] = task
            return task

        if len(fn) > 1:
            raise TypeError("@app.task takes one function")
        if fn:
            return register(fn[0])
        return BoundTaskDecorator(register) if bind else TaskDecorator(register)

    def gen_task_name(self, fn: Callable[..., Any]) -> str:
        module = fn.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fn.__qualname__}"

    def signature(self, name: str, args: Sequence[Any] = (),
                  kwargs: Mapping[str, Any] | None = None, **options: Any) -> Signature[Any]:
        return Signature(name, args, kwargs, options, app=self)

    def AsyncResult(self, task_id: str) -> Result[Any]:
        return Result(task_id, self)

    # -- codecs --

    def register_serializer(self, name: str, encode: Encoder, decode: Decoder,
                            content_type: str, content_encoding: str = "utf-8") -> None:
        """Add a serializer usable as ``serializer=name`` (and in ``accept_content``)."""
        self.codecs.register_serializer(name, encode, decode, content_type, content_encoding)

    def register_compressor(self, name: str, compress: Callable[[bytes], bytes],
                            decompress: Callable[..., bytes], content_type: str) -> None:
        """Add a compression scheme usable as ``compression=name``."""
        self.codecs.register_compressor(name, compress, decompress, content_type)

    # -- calling --

    async def send_task(self, name: str, args: Sequence[Any] | None = None,
                        kwargs: Mapping[str, Any] | None = None,
                        **options: Any) -> Result[Any]:
        """Send a task by name (it need not be registered here)."""
        return await send(self, name, args, kwargs, options, task=self.tasks.get(name))

    @contextlib.asynccontextmanager
    async def producer_or_acquire(self, producer: Producer | None = None
                                  ) -> AsyncIterator[Producer]:
        """Reuse one connection/channel for many publishes:

        ``async with app.producer_or_acquire() as p: await add.apply_async((2, 2), producer=p)``
        """
        if producer is not None:
            yield producer
            return
        async with self.broker.producer() as acquired:
            yield acquired

    # -- connections, one set per event loop --

    def _connections(self) -> _Connections:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        found = self._loops.get(loop)
        if found is None:
            broker = create_broker(BrokerContext(self.conf.broker, self.conf, self.clock,
                                                 self.shared))
            backend = create_backend(BackendContext(self.conf.backend, self.conf, self.codecs,
                                                    self.clock, self.shared, broker))
            found = self._loops[loop] = _Connections(broker, backend)
        self._last = (weakref.ref(loop), found)
        return found

    @property
    def broker(self) -> Broker:
        """The broker of the running event loop (connects on first use)."""
        return self._connections().broker

    @property
    def backend(self) -> ResultBackend:
        """The result backend of the running event loop."""
        return self._connections().backend

    async def connect(self) -> None:
        connections = self._connections()
        await connections.broker.connect()
        await connections.backend.connect()

    async def close(self) -> None:
        """Close this event loop's connections."""
        self._last = None
        connections = self._loops.pop(asyncio.get_running_loop(), None)
        if connections is not None:
            await connections.backend.close()
            await connections.broker.close()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, traceback: TracebackType | None) -> None:
        await self.close()

    # -- results --

    async def store_state(self, task_id: str, state: str, result: Any, *,
                          name: str | None = None, traceback: str | None = None,
                          children: Sequence[str] = (), reply_to: str | None = None) -> None:
        """Store a state of ``task_id`` (what workers and ``update_state`` call)."""
        await self.backend.store(
            make_meta(task_id, state, result, name=name, traceback=traceback,
                      children=children, now=self.clock.time()),
            reply_to=reply_to,
        )


def make_meta(task_id: str, state: str, result: Any, *, name: str | None = None,
              traceback: str | None = None, children: Sequence[str] = (),
              now: float) -> Meta:
    """The result meta of DESIGN.md (an exception becomes Celery's exc_* mapping)."""
    if isinstance(result, BaseException):
        if traceback is None and result.__traceback__ is not None:
            traceback = "".join(tb.format_exception(result))
        result = exception_to_result(result)
    done = (dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
            if state in states.READY_STATES else None)
    return {"task_id": task_id, "status": state, "result": result, "traceback": traceback,
            "children": list(children), "date_done": done, "name": name}

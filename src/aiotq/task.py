"""Task: what ``@app.task`` makes of a function, and the request context it runs in."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from . import states
from .calling import send
from .exceptions import (
    ImproperlyConfigured,
    MaxRetriesExceededError,
    OperationalError,
    Retry,
)

if TYPE_CHECKING:
    from .app import App
    from .canvas import Signature
    from .result import AsyncResult

P = ParamSpec("P")
R = TypeVar("R")

#: Per-task options that ``@app.task(...)`` accepts (besides ``name`` and ``bind``).
TASK_OPTIONS = frozenset({
    "serializer", "compression", "queue", "exchange", "exchange_type", "routing_key",
    "priority", "ignore_result", "acks_late", "max_retries", "default_retry_delay",
    "track_started", "time_limit", "soft_time_limit", "expires", "retry", "retry_policy",
})


@dataclass(slots=True)
class Request:
    """What a bound task knows about the call it runs for (``self.request``)."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: dt.datetime | None = None
    expires: dt.datetime | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    delivery_info: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    errbacks: list[dict[str, Any]] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)
    called_directly: bool = True
    #: The worker's event loop, so a ``def`` task's thread can reach it.
    loop: asyncio.AbstractEventLoop | None = None


current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "aiotq_request", default=None
)
current_app: contextvars.ContextVar[App | None] = contextvars.ContextVar(
    "aiotq_app", default=None
)


class _Done:
    """An already finished awaitable: what ``update_state`` returns in a ``def`` task."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class Task(Generic[P, R]):
    """A registered task. Call it to run it here; ``delay``/``apply_async`` to send it."""

    OperationalError: ClassVar[type[OperationalError]] = OperationalError
    MaxRetriesExceededError: ClassVar[type[MaxRetriesExceededError]] = MaxRetriesExceededError

    def __init__(self, app: App, fn: Callable[..., Any], name: str, bind: bool,
                 options: Mapping[str, Any]) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"unknown task option(s) {sorted(unknown)} for {name}; known: "
                f"{', '.join(sorted(TASK_OPTIONS))}"
            )
        self.app = app
        self.fn = fn
        self.name = name
        self.bind = bind
        self.options: dict[str, Any] = dict(options)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or 'app'}>"

    # -- option attributes, with Celery's names --

    @property
    def max_retries(self) -> int | None:
        value = self.options.get("max_retries", self.app.conf.task_default_max_retries)
        return None if value is None else int(value)

    @property
    def default_retry_delay(self) -> float:
        return float(self.options.get("default_retry_delay",
                                      self.app.conf.task_default_retry_delay))

    @property
    def acks_late(self) -> bool:
        return bool(self.options.get("acks_late", self.app.conf.task_acks_late))

    @property
    def ignore_result(self) -> bool:
        return bool(self.options.get("ignore_result", self.app.conf.task_ignore_result))

    @property
    def track_started(self) -> bool:
        return bool(self.options.get("track_started", self.app.conf.task_track_started))

    @property
    def request(self) -> Request:
        return current_request.get() or Request(task=self.name)

    # -- calling --

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the task here and now; nothing is sent."""
        request = Request(task=self.name, args=tuple(args), kwargs=dict(kwargs))
        if self.is_async:
            return self._call_async(request, args, kwargs)
        token = current_request.set(request)
        try:
            return self.run(*args, **kwargs)
        finally:
            current_request.reset(token)

    async def _call_async(self, request: Request, args: Sequence[Any],
                          kwargs: Mapping[str, Any]) -> Any:
        token = current_request.set(request)
        try:
            return await self.run(*args, **kwargs)
        finally:
            current_request.reset(token)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the user's function (with the task first when bound)."""
        return self.fn(self, *args, **kwargs) if self.bind else self.fn(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, AsyncResult[R]]:
        """Send the task with these arguments: ``await add.delay(2, 2)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Coroutine[Any, Any, AsyncResult[R]]:
        """Send the task with execution options (countdown, eta, expires, queue, link, ...).

        Example: ``await add.apply_async((2, 2), countdown=10, priority=9)``.
        """
        # send's own coroutine, as delay() returns this one's: a coroutine of its own here
        # would only add a frame to every publish.
        return send(self.app, self.name, args, kwargs, options, task=self)

    def s(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """A signature of this task with partial arguments: ``add.s(2)``."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature[R]:
        """An immutable signature: a callback made of it ignores the parent's result."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, immutable=True, app=self.app)

    def signature(self, args: Sequence[Any] | None = None,
                  kwargs: Mapping[str, Any] | None = None, **options: Any) -> Signature[R]:
        from .canvas import Signature

        return Signature(self.name, args or (), kwargs or {}, options, app=self.app)

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        from .result import AsyncResult

        return AsyncResult(task_id, app=self.app)

    # -- inside a running task --

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> Awaitable[None]:
        """Record a state (e.g. ``PROGRESS``) for the running task; ``get(on_message=...)``
        sees it. ``await`` it in an ``async def`` task; in a ``def`` task just call it."""
        request = self.request
        target = task_id or request.id
        if target is None:
            raise ImproperlyConfigured("update_state needs a task_id outside a running task")
        coro = self.app.store_state(target, state or states.PENDING, meta,
                                    name=self.name, reply_to=request.reply_to)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if request.loop is None:
                coro.close()
                raise ImproperlyConfigured(
                    "update_state from a thread needs a worker loop"
                ) from None
            asyncio.run_coroutine_threadsafe(coro, request.loop).result()
            return _Done()
        return coro

    def retry(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              exc: BaseException | None = None, eta: dt.datetime | None = None,
              countdown: float | None = None, max_retries: int | None = None,
              **options: Any) -> Retry:
        """Ask the worker to run this task again later: ``raise self.retry(exc=exc)``.

        Always raises: :class:`Retry`, or ``exc`` (else MaxRetriesExceededError) once
        ``max_retries`` is reached.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc if exc is not None else ImproperlyConfigured(
                "retry() needs a task run by a worker"
            )
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}]: max_retries={limit} reached"
            )
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        when = countdown if eta is None else eta.timestamp() - self.app.clock.time()
        raise Retry(exc=exc, when=when, args=args, kwargs=kwargs, **options)

"""AsyncResult and GroupResult: waiting for tasks, pushed (never polled) by the backend."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import states
from .exceptions import ImproperlyConfigured, TaskError, TaskRevokedError
from .exceptions import TimeoutError as ResultTimeout
from .results.base import Meta

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")
OnMessage = Callable[[Meta], Awaitable[None] | None]

_DYNAMIC_ERRORS: dict[tuple[str, str], type[BaseException]] = {}


def exception_to_result(exc: BaseException) -> dict[str, Any]:
    """How an exception travels in a result meta (Celery's shape)."""
    return {
        "exc_type": type(exc).__name__,
        "exc_message": [a if isinstance(a, str | int | float | bool | None) else repr(a)
                        for a in exc.args],
        "exc_module": type(exc).__module__,
    }


def exception_from_result(value: Any) -> BaseException:
    """Rebuild the task's exception: the same type where it is already imported here (no
    module is imported on a result's say-so), else a :class:`TaskError` of that name."""
    if not isinstance(value, dict) or "exc_type" not in value:
        return TaskError(repr(value))
    name, module = str(value["exc_type"]), str(value.get("exc_module") or "builtins")
    message = value.get("exc_message") or []
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls = getattr(sys.modules.get(module), name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        with contextlib.suppress(Exception):
            return cls(*args)
    key = (module, name)
    if key not in _DYNAMIC_ERRORS:
        _DYNAMIC_ERRORS[key] = type(name, (TaskError,), {"__module__": module})
    return _DYNAMIC_ERRORS[key](*args)


async def _notify(on_message: OnMessage | None, meta: Meta) -> None:
    if on_message is not None:
        outcome = on_message(meta)
        if inspect.isawaitable(outcome):
            await outcome


class AsyncResult(Generic[R]):
    """The result of a task that was sent: ``await result.get(timeout=10)``.

    ``state``, ``result``, ``traceback`` and ``info`` are what was last seen (after
    ``get()`` or ``await refresh()``).
    """

    def __init__(self, task_id: str, app: App | None = None, *, task_name: str | None = None,
                 parent: AsyncResult[Any] | None = None) -> None:
        resolved = app
        if resolved is None:
            # Imported here: the calling path imports this module, and task.py imports the
            # calling path at its top (an import per publish would cost more than a publish's
            # option resolution).
            from .task import current_app

            resolved = current_app.get()
        if resolved is None:
            raise ImproperlyConfigured("AsyncResult needs app= outside a running task")
        self.id = task_id
        self.app: App = resolved
        self.task_name = task_name
        self.parent = parent
        self._meta: Meta | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    # -- last seen state --

    @property
    def state(self) -> str:
        return str(self._meta["status"]) if self._meta else states.PENDING

    status = state

    @property
    def info(self) -> Any:
        """The result, the exception, or a custom state's meta."""
        if self._meta is None:
            return None
        if self._meta["status"] in states.EXCEPTION_STATES:
            return exception_from_result(self._meta["result"])
        return self._meta["result"]

    result = info

    @property
    def traceback(self) -> str | None:
        return self._meta.get("traceback") if self._meta else None

    @property
    def children(self) -> list[AsyncResult[Any]]:
        ids = self._meta.get("children") if self._meta else None
        return [AsyncResult(str(i), self.app) for i in ids or []]

    @property
    def date_done(self) -> str | None:
        return self._meta.get("date_done") if self._meta else None

    # -- asking the backend --

    async def refresh(self) -> str:
        """Fetch the newest state from the backend; return it."""
        meta = await self.app.backend.get(self.id)
        if meta is not None:
            self._meta = meta
        return self.state

    async def ready(self) -> bool:
        return await self.refresh() in states.READY_STATES

    async def successful(self) -> bool:
        return await self.refresh() == states.SUCCESS

    async def failed(self) -> bool:
        return await self.refresh() == states.FAILURE

    async def forget(self) -> None:
        await self.app.backend.forget(self.id)
        self._meta = None

    async def get(self, timeout: float | None = None, propagate: bool = True,
                  on_message: OnMessage | None = None) -> R:
        """Wait for the task and return its result.

        ``propagate=True`` re-raises the task's exception (its own type where importable);
        ``propagate=False`` returns it and fills ``traceback``. ``on_message(meta)`` is
        called for every state, in order, including those stored before this call.
        Raises :class:`aiotq.exceptions.TimeoutError` after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(self.app.backend.watch([self.id])) as feed:
                    async for meta in feed:
                        self._meta = meta
                        await _notify(on_message, meta)
                        if meta["status"] in states.READY_STATES:
                            break
        except TimeoutError:
            raise ResultTimeout(f"task {self.id} not ready after {timeout}s") from None
        outcome: R = self._outcome(propagate)
        return outcome

    def _outcome(self, propagate: bool) -> Any:
        assert self._meta is not None
        status = self._meta["status"]
        if status == states.SUCCESS:
            return self._meta["result"]
        exc = self.info
        if status == states.REVOKED and not isinstance(exc, TaskRevokedError):
            exc = TaskRevokedError(str(exc))
        if propagate:
            raise exc
        return exc

    async def wait(self, timeout: float | None = None, propagate: bool = True) -> R:
        return await self.get(timeout=timeout, propagate=propagate)


class GroupResult:
    """The results of a group, in the group's order: ``await res.get()`` is a list."""

    def __init__(self, group_id: str, results: Sequence[AsyncResult[Any]], app: App) -> None:
        self.id = group_id
        self.results = list(results)
        self.app = app

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    async def get(self, timeout: float | None = None, propagate: bool = True,
                  on_message: OnMessage | None = None) -> list[Any]:
        """Wait for every member (one watch over all of them) and return their results."""
        by_id = {r.id: r for r in self.results}
        pending = set(by_id)
        try:
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(self.app.backend.watch(list(by_id))) as feed:
                    async for meta in feed:
                        member = by_id.get(str(meta["task_id"]))
                        if member is None:
                            continue
                        member._meta = meta
                        await _notify(on_message, meta)
                        if meta["status"] in states.READY_STATES:
                            pending.discard(member.id)
                            if not pending:
                                break
        except TimeoutError:
            raise ResultTimeout(
                f"group {self.id}: {len(pending)} of {len(by_id)} not ready after {timeout}s"
            ) from None
        return [r._outcome(propagate) for r in self.results]

    async def ready(self) -> bool:
        return all([await r.ready() for r in self.results])

    async def successful(self) -> bool:
        return all([await r.successful() for r in self.results])

    async def completed_count(self) -> int:
        return sum([await r.successful() for r in self.results])

    async def forget(self) -> None:
        for r in self.results:
            await r.forget()

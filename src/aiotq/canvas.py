"""Signatures, groups and chains: task calls as values that travel inside messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .exceptions import ImproperlyConfigured
from .message import new_id

if TYPE_CHECKING:
    from .app import App
    from .result import AsyncResult, GroupResult

R = TypeVar("R")


class Signature(Generic[R]):
    """A task name with (partial) arguments and options: ``add.s(2, 2)``.

    Serializable as a plain dict (``as_dict``), so it can ride in a message's ``callbacks``,
    ``errbacks`` or ``chain`` and be applied by any worker.
    """

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        app: App | None = None,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        self.app = app

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    # -- values --

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "options": self.options,
            "subtask_type": None,
            "immutable": self.immutable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature[Any]:
        if not isinstance(data, Mapping) or not isinstance(data.get("task"), str):
            raise ImproperlyConfigured(f"not a signature: {data!r}")
        if data.get("subtask_type") not in (None, "signature"):
            raise ImproperlyConfigured(
                f"signature type {data.get('subtask_type')!r} is not supported"
            )
        from .calling import CALL_OPTIONS

        # Signatures made by other clients (Celery) carry options of their own: keep ours.
        options = {k: v for k, v in (data.get("options") or {}).items() if k in CALL_OPTIONS}
        return cls(str(data["task"]), data.get("args") or (), data.get("kwargs") or {},
                   options, immutable=bool(data.get("immutable")), app=app)

    @property
    def id(self) -> str | None:
        task_id = self.options.get("task_id")
        return str(task_id) if task_id is not None else None

    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Signature[R]:
        """A copy with ``args`` appended (unless immutable), ``kwargs`` and options merged."""
        new_args = self.args if self.immutable or not args else (*self.args, *args)
        return Signature(self.task, new_args, {**self.kwargs, **(kwargs or {})},
                         {**self.options, **options}, immutable=self.immutable, app=self.app)

    def set(self, **options: Any) -> Signature[R]:
        """Set execution options in place (``queue=``, ``countdown=``, ...); returns self."""
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def freeze(self) -> str:
        """Fix the task id this signature will be sent with, and return it."""
        return str(self.options.setdefault("task_id", new_id()))

    def link(self, callback: Signature[Any]) -> Signature[Any]:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature[Any]) -> Signature[Any]:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def with_partial(self, value: Any) -> Signature[R]:
        """The signature a callback runs as: the parent's result first, unless immutable."""
        if self.immutable:
            return self.clone()
        return Signature(self.task, (value, *self.args), self.kwargs, self.options,
                         app=self.app)

    # -- calling API --

    def _app(self) -> App:
        if self.app is None:
            raise ImproperlyConfigured(f"signature {self!r} is not bound to an app")
        return self.app

    async def apply_async(self, args: Sequence[Any] | None = None,
                          kwargs: Mapping[str, Any] | None = None,
                          **options: Any) -> AsyncResult[R]:
        """Send it: ``args`` are prepended to the signature's own (unless immutable)."""
        from .calling import send

        call_args = self.args if self.immutable or not args else (*args, *self.args)
        merged = {**self.options, **options}
        return await send(self._app(), self.task, call_args, {**self.kwargs, **(kwargs or {})},
                          merged)

    async def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[R]:
        return await self.apply_async(args, kwargs)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run it here (in-process), like calling the task."""
        task = self._app().tasks[self.task]
        call_args = self.args if self.immutable else (*args, *self.args)
        result = task(*call_args, **{**self.kwargs, **kwargs})
        if task.is_async:
            return await result
        return result

    def __or__(self, other: Signature[Any] | chain) -> chain:
        return chain(self, other)


def maybe_signature(value: Signature[Any] | Mapping[str, Any], app: App | None
                    ) -> Signature[Any]:
    return value if isinstance(value, Signature) else Signature.from_dict(value, app=app)


class group:
    """Run signatures in parallel: ``await group(add.s(i, i) for i in range(10)).apply_async()``
    returns a :class:`~aiotq.result.GroupResult` whose ``get()`` is the list of results."""

    def __init__(self, *tasks: Signature[Any] | Iterable[Signature[Any]]) -> None:
        flat: list[Signature[Any]] = []
        for item in tasks:
            if isinstance(item, Signature):
                flat.append(item)
            else:
                flat.extend(item)
        self.tasks = flat

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def __len__(self) -> int:
        return len(self.tasks)

    async def apply_async(self, args: Sequence[Any] | None = None,
                          kwargs: Mapping[str, Any] | None = None,
                          **options: Any) -> GroupResult:
        from .calling import send_group

        if not self.tasks:
            raise ImproperlyConfigured("a group needs at least one signature")
        app = self.tasks[0]._app()
        return await send_group(app, self.tasks, args or (), kwargs or {}, options)

    async def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return await self.apply_async(args, kwargs)


class chain:
    """Run signatures one after the other, each getting the previous result first:
    ``await (add.s(2, 2) | add.s(4)).apply_async()`` gives an AsyncResult of the last."""

    def __init__(self, *tasks: Signature[Any] | chain | Iterable[Signature[Any]]) -> None:
        flat: list[Signature[Any]] = []
        for item in tasks:
            if isinstance(item, chain):
                flat.extend(item.tasks)
            elif isinstance(item, Signature):
                flat.append(item)
            elif isinstance(item, group):
                raise ImproperlyConfigured("a group inside a chain (a chord) is not supported")
            else:
                flat.extend(item)
        self.tasks: list[Signature[Any]] = flat

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: Signature[Any] | chain) -> chain:
        return chain(self, other)

    async def apply_async(self, args: Sequence[Any] | None = None,
                          kwargs: Mapping[str, Any] | None = None,
                          **options: Any) -> AsyncResult[Any]:
        from .calling import send_chain

        if not self.tasks:
            raise ImproperlyConfigured("a chain needs at least one signature")
        return await send_chain(self.tasks[0]._app(), self.tasks, args or (), kwargs or {},
                                options)

    async def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return await self.apply_async(args, kwargs)


def signature(varies: str | Signature[Any] | Mapping[str, Any], args: Sequence[Any] = (),
              kwargs: Mapping[str, Any] | None = None, *, app: App | None = None,
              **options: Any) -> Signature[Any]:
    """Build a signature by task name (``signature("proj.add", (2, 2), app=app)``) or
    from a dict or another signature."""
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, args, kwargs, options, app=app)

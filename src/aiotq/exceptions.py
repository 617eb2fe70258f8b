"""One exception tree for aiotq; transport errors are translated at the adapter boundary."""

from __future__ import annotations

import builtins
from typing import Any


class AiotqError(Exception):
    """Base class of every error aiotq raises."""


class ImproperlyConfigured(AiotqError):
    """A setting, URL or option has a value aiotq cannot use."""


class UnroutableError(ImproperlyConfigured):
    """No queue would receive the message (nothing bound for its exchange and key)."""


class OperationalError(AiotqError):
    """The broker or result backend could not be reached (after the publish retries)."""


class ContentDisallowed(AiotqError):
    """A message uses a content type that is not in ``accept_content``."""


class EncodeError(AiotqError):
    """A value could not be serialized or compressed."""


class DecodeError(AiotqError):
    """A payload could not be decompressed or deserialized."""


class MessageError(AiotqError):
    """A message does not follow the envelope (protocol v2) aiotq understands."""


class NotRegistered(AiotqError, KeyError):
    """No task of that name is registered with the app."""

    def __str__(self) -> str:
        return f"task {self.args[0]!r} is not registered" if self.args else "task not registered"


class TimeoutError(AiotqError, builtins.TimeoutError):
    """``get(timeout=...)`` ran out before the task was ready."""


class TaskRevokedError(AiotqError):
    """The task was revoked (for example because it expired) and will not run."""


class TaskError(AiotqError):
    """Stand-in for a task's exception whose type cannot be imported here."""


class MaxRetriesExceededError(AiotqError):
    """``Task.retry`` was called more often than the task's ``max_retries``."""


class Retry(AiotqError):
    """Raised by ``Task.retry`` to ask the worker to publish the task again."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | None = None,
        **options: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.options = options
        super().__init__(message or (f"Retry in {when}s" if when is not None else "Retry"))


class Reject(AiotqError):
    """Raised by a task to reject its message: it is dead-lettered or re-queued."""

    def __init__(self, reason: str = "", requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason)


class TransportError(AiotqError):
    """A broker or backend connection failed; publishing retries these per the policy.

    Adapters raise it with the transport's own error chained (``raise ... from exc``).
    """

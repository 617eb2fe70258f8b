"""The publish retry policy of calling.rst: pure delays, and a runner around them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .exceptions import ImproperlyConfigured, OperationalError, TransportError

T = TypeVar("T")
logger = logging.getLogger("aiotq.retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` (None: forever), ``interval_start``, ``interval_step``, ``interval_max``."""

    max_retries: int | None = 3
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 0.2

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any] | None) -> RetryPolicy:
        if policy is None:
            return cls()
        unknown = set(policy) - {"max_retries", "interval_start", "interval_step",
                                 "interval_max"}
        if unknown:
            raise ImproperlyConfigured(f"unknown retry_policy keys: {sorted(unknown)}")
        merged = {**cls().as_dict(), **policy}
        max_retries = merged["max_retries"]
        if max_retries is not None and (not isinstance(max_retries, int) or max_retries < 0):
            raise ImproperlyConfigured("retry_policy max_retries must be None or an int >= 0")
        for key in ("interval_start", "interval_step", "interval_max"):
            if not isinstance(merged[key], int | float) or merged[key] < 0:
                raise ImproperlyConfigured(f"retry_policy {key} must be a number >= 0")
        return cls(max_retries, float(merged["interval_start"]),
                   float(merged["interval_step"]), float(merged["interval_max"]))

    def as_dict(self) -> dict[str, Any]:
        return {"max_retries": self.max_retries, "interval_start": self.interval_start,
                "interval_step": self.interval_step, "interval_max": self.interval_max}

    def delays(self) -> Iterator[float]:
        """The wait before each retry: start, start+step, ... capped at max."""
        attempt = 0
        while self.max_retries is None or attempt < self.max_retries:
            yield min(self.interval_start + attempt * self.interval_step, self.interval_max)
            attempt += 1


NO_RETRY = RetryPolicy(max_retries=0)


async def retry_after(
    error: TransportError,
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    what: str = "publish",
) -> T:
    """Retry ``operation``, whose first attempt failed with ``error``, per ``policy``: wait
    before each retry, and retry on every :class:`TransportError`.

    The caller makes the first attempt itself, so that an attempt that succeeds (nearly all
    of them) costs no closure and no extra coroutine. When the retries are exhausted raise
    :class:`OperationalError` chained to the last error.
    """
    delays = policy.delays()
    while True:
        delay = next(delays, None)
        if delay is None:
            raise OperationalError(f"{what} failed: {error}") from error
        logger.warning("%s failed (%s); retrying in %.2fs", what, error, delay)
        await sleep(delay)
        try:
            return await operation()
        except TransportError as exc:
            error = exc

"""App settings, with Celery's names and aiotq's defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ImproperlyConfigured
from .retry import RetryPolicy

DEFAULT_BROKER_URL = "sqlite:///aiotq.db"

#: ``task_routes``: a mapping of task-name globs to options, a router callable
#: ``(name, args, kwargs, options) -> options | None``, or a list of either.
Router = Callable[..., Mapping[str, Any] | None]
Routes = Mapping[str, Mapping[str, Any] | str] | Router | Sequence[Any] | None


@dataclass(slots=True)
class Settings:
    """Every setting of an app. Change them with ``App(..., name=value)`` or
    ``app.conf.update(name=value)``; unknown names are an error."""

    broker_url: str | None = None
    result_backend: str | None = None
    #: Options of the broker in use: see docs/brokers/<broker>.md.
    broker_transport_options: dict[str, Any] = field(default_factory=dict)
    #: Options of the result backend: ``{"follow_celery_results": True}`` makes the Redis
    #: backend's ``get()`` follow results that Celery workers store (docs/celery.md).
    result_backend_transport_options: dict[str, Any] = field(default_factory=dict)

    task_serializer: str = "json"
    result_serializer: str = "json"
    accept_content: tuple[str, ...] = ("json", "msgpack")
    result_accept_content: tuple[str, ...] | None = None
    task_compression: str | None = None

    task_publish_retry: bool = True
    task_publish_retry_policy: RetryPolicy = field(default_factory=RetryPolicy)

    task_default_queue: str = "celery"
    task_default_exchange: str | None = None
    task_default_exchange_type: str = "direct"
    task_default_routing_key: str | None = None
    task_default_priority: int | None = None
    task_routes: Routes = None
    #: Queues with their exchange bindings: ``QueueSpec`` objects or mappings such as
    #: ``{"name": "math", "exchange": "tasks", "exchange_type": "topic",
    #: "routing_key": "math.#"}``. Workers declare them; calls are routed through them.
    task_queues: tuple[Any, ...] = ()

    task_ignore_result: bool = False
    task_acks_late: bool = True
    task_track_started: bool = False
    task_default_max_retries: int | None = 3
    task_default_retry_delay: float = 180.0
    #: A message delivered more often than this is dead-lettered as poison.
    task_max_deliveries: int = 5

    result_expires: float | None = 86400.0
    #: Most states kept per task for ``on_message`` replay.
    result_state_history: int = 10_000

    worker_concurrency: int = 100
    #: Messages fetched ahead of free slots, per slot.
    worker_prefetch_multiplier: int = 1
    #: Threads for plain ``def`` tasks.
    worker_threads: int = 8
    #: A dead worker's messages are taken over after this many seconds.
    worker_lease_timeout: float = 30.0
    #: Running tasks get this long to finish on a warm shutdown.
    worker_shutdown_timeout: float = 30.0
    #: ETAs further ahead than this are parked in the broker, nearer ones held by the worker.
    worker_eta_horizon: float = 60.0
    #: Most ETA messages one worker holds in memory; more are parked in the broker.
    worker_max_held: int = 10_000

    #: Largest body accepted, compressed or decompressed (bytes).
    message_max_size: int = 64 * 1024 * 1024

    #: URLs pinned over the environment and the settings (``aiotq.testing`` sets them).
    forced_urls: tuple[str | None, str | None] = (None, None)

    def update(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        for name, value in {**(values or {}), **kwargs}.items():
            self.set(name, value)

    def set(self, name: str, value: Any) -> None:
        if name not in _FIELDS:
            raise ImproperlyConfigured(f"unknown setting {name!r}")
        setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # Coerce on every assignment, so ``app.conf.task_queues = [...]`` works as update().
        object.__setattr__(self, name, _coerce(name, value))

    @property
    def broker(self) -> str:
        return (self.forced_urls[0] or os.environ.get("AIOTQ_BROKER_URL") or self.broker_url
                or DEFAULT_BROKER_URL)

    @property
    def backend(self) -> str:
        """The result backend URL: the environment, the setting, or one derived from the broker."""
        url = (self.forced_urls[1] or os.environ.get("AIOTQ_RESULT_BACKEND")
               or self.result_backend)
        if url:
            return url
        broker = self.broker
        return "rpc://" if broker.startswith(("amqp://", "amqps://")) else broker

    def result_accept(self) -> tuple[str, ...]:
        return self.result_accept_content or self.accept_content


_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))


def _coerce(name: str, value: Any) -> Any:
    if name == "task_publish_retry_policy" and not isinstance(value, RetryPolicy):
        return RetryPolicy.from_mapping(value)
    if name == "task_queues":
        from .routing import QueueSpec

        return tuple(QueueSpec.coerce(item) for item in value or ())
    if name in ("accept_content", "result_accept_content") and value is not None:
        return (value,) if isinstance(value, str) else tuple(value)
    return value

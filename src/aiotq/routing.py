"""Where a task's message goes: ``task_routes`` and ``task_queues`` resolved to a Route.

Pure functions, so that every broker routes alike. On brokers without exchanges (memory,
SQLite, Redis) an ``exchange`` + ``routing_key`` is resolved here through the bindings of
``task_queues``, as RabbitMQ would resolve it (direct: equal keys; topic: ``*`` one word,
``#`` zero or more words).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .broker.base import Route
from .exceptions import ImproperlyConfigured, UnroutableError


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue and, optionally, its binding to an exchange (the ``task_queues`` setting)."""

    name: str
    exchange: str | None = None
    exchange_type: str = "direct"
    routing_key: str | None = None

    @classmethod
    def coerce(cls, value: QueueSpec | Mapping[str, Any] | str) -> QueueSpec:
        if isinstance(value, QueueSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        try:
            return cls(**dict(value))
        except TypeError as exc:
            raise ImproperlyConfigured(f"bad task_queues entry {value!r}: {exc}") from None


def route_options(routes: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                  options: Mapping[str, Any]) -> dict[str, Any]:
    """Options from ``task_routes`` for task ``name`` (first matching router wins)."""
    if routes is None:
        return {}
    routers = routes if isinstance(routes, list | tuple) else [routes]
    for router in routers:
        found = _apply_router(router, name, args, kwargs, options)
        if found is not None:
            return found
    return {}


def _apply_router(router: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                  options: Mapping[str, Any]) -> dict[str, Any] | None:
    if isinstance(router, Mapping):
        for pattern, target in router.items():
            if pattern == name or fnmatch.fnmatchcase(name, pattern):
                return _as_options(target)
        return None
    if callable(router):
        return _as_options(_call_router(router, name, args, kwargs, options))
    raise ImproperlyConfigured(f"task_routes entry {router!r} is not a mapping or callable")


def _call_router(router: Callable[..., Any], name: str, args: Sequence[Any],
                 kwargs: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    return router(name, args, kwargs, options)


def _as_options(target: Any) -> dict[str, Any] | None:
    if target is None:
        return None
    if isinstance(target, str):
        return {"queue": target}
    if isinstance(target, Mapping):
        return dict(target)
    raise ImproperlyConfigured(f"a route must be a queue name or a mapping, not {target!r}")


def topic_matches(binding: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    return _match(tuple(binding.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=1024)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def binding_matches(spec: QueueSpec, exchange: str, routing_key: str) -> bool:
    if spec.exchange != exchange:
        return False
    key = spec.routing_key if spec.routing_key is not None else spec.name
    if spec.exchange_type == "topic":
        return topic_matches(key, routing_key)
    if spec.exchange_type == "fanout":
        return True
    return key == routing_key


def make_route(
    *,
    queue: str | None,
    exchange: str | None,
    routing_key: str | None,
    exchange_type: str | None,
    queues: Sequence[QueueSpec],
    default_queue: str,
) -> Route:
    """The Route for resolved options; raise if an exchange would route it nowhere."""
    if not exchange:
        name = queue or default_queue
        spec = next((q for q in queues if q.name == name), None)
        if spec is not None and spec.exchange:
            return Route(name, spec.exchange, routing_key or spec.routing_key or name,
                         spec.exchange_type)
        return Route(name, None, routing_key or name)
    key = routing_key or queue or default_queue
    bound = [q for q in queues if binding_matches(q, exchange, key)]
    if queue:
        kind = exchange_type or next((q.exchange_type for q in bound), "direct")
        return Route(queue, exchange, key, kind)
    if not bound:
        raise UnroutableError(
            f"no queue is bound to exchange {exchange!r} with routing key {key!r}: the "
            "message would be lost; declare one in the task_queues setting"
        )
    return Route(bound[0].name, exchange, key, exchange_type or bound[0].exchange_type)

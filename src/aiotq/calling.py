"""apply_async: options -> message -> publish, with the retry policy.

Options resolve per key in this order: the call's option, the task's attribute
(``@app.task(queue=...)``), ``task_routes``, then the app setting. :func:`prepare` is pure
(it reads the app's settings, codecs and clock, and does no I/O); :func:`send` publishes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .broker.base import Outgoing, Producer, Route
from .canvas import Signature, maybe_signature
from .exceptions import ImproperlyConfigured, TransportError
from .message import Embed, build, new_id
from .result import AsyncResult, GroupResult
from .retry import NO_RETRY, RetryPolicy, retry_after
from .routing import make_route, route_options

if TYPE_CHECKING:
    from .app import App
    from .task import Task

#: Every option apply_async accepts. The internal ones (parent_id, root_id, group_id,
#: group_index, retries, chain) are what the worker passes for callbacks and retries.
CALL_OPTIONS = frozenset({
    "task_id", "countdown", "eta", "expires", "retry", "retry_policy", "serializer",
    "compression", "queue", "exchange", "exchange_type", "routing_key", "priority", "link",
    "link_error", "headers", "producer", "ignore_result", "time_limit", "soft_time_limit",
    "shadow", "parent_id", "root_id", "group_id", "group_index", "retries", "chain",
})
_ROUTING_KEYS = ("queue", "exchange", "exchange_type", "routing_key")
_INHERITED = frozenset({"serializer", "compression", "priority", "ignore_result", "time_limit",
                        "soft_time_limit", "expires", "retry", "retry_policy", *_ROUTING_KEYS})


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which makes
# one four times as slow to build, and one is built per publish.
@dataclass(slots=True)
class PreparedCall:
    task_id: str
    outgoing: Outgoing
    policy: RetryPolicy
    ignore_result: bool


def _check_options(options: Mapping[str, Any]) -> None:
    if not CALL_OPTIONS.issuperset(options):
        unknown = set(options) - CALL_OPTIONS
        raise ImproperlyConfigured(
            f"unknown apply_async option(s): {', '.join(sorted(unknown))}"
        )


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    # Naive datetimes are taken as UTC (documented in docs/calling.md).
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _as_time(value: Any, name: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, dt.datetime):
        raise ImproperlyConfigured(f"{name} must be a datetime, not {type(value).__name__}")
    return _aware(value, name)


def resolve_eta(countdown: Any, eta: Any, now: float) -> dt.datetime | None:
    if countdown is not None and eta is not None:
        raise ImproperlyConfigured("give countdown or eta, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, int | float):
            raise ImproperlyConfigured(f"countdown must be a number of seconds: {countdown!r}")
        if countdown < 0:
            raise ImproperlyConfigured(f"countdown must not be negative: {countdown!r}")
        return dt.datetime.fromtimestamp(now + countdown, dt.UTC)
    return None if eta is None else _as_time(eta, "eta")


def resolve_expires(expires: Any, now: float) -> dt.datetime | None:
    if expires is None:
        return None
    if isinstance(expires, int | float) and not isinstance(expires, bool):
        return dt.datetime.fromtimestamp(now + expires, dt.UTC)
    return _as_time(expires, "expires")


def resolve_priority(priority: Any) -> int | None:
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255:
        raise ImproperlyConfigured(f"priority must be an int from 0 to 255: {priority!r}")
    return priority


def _signatures(value: Any, app: App) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = [value] if isinstance(value, Signature | Mapping) else list(value)
    out = []
    for item in items:
        if not isinstance(item, Signature | Mapping):
            raise ImproperlyConfigured(f"link/link_error take signatures, not {item!r}")
        out.append(maybe_signature(item, app).as_dict())
    return out


def merge_options(app: App, name: str, args: Sequence[Any], kwargs: Mapping[str, Any],
                  options: Mapping[str, Any], task: Task[Any, Any] | None) -> dict[str, Any]:
    """Call options over task attributes over ``task_routes`` (settings come later)."""
    merged = route_options(app.conf.task_routes, name, args, kwargs, options)
    if task is not None and task.options:
        for key, value in task.options.items():
            if key in _INHERITED:
                merged[key] = value
    for key, value in options.items():
        if value is not None or key not in _INHERITED:
            merged[key] = value
    return merged


def _policy(app: App, options: Mapping[str, Any]) -> RetryPolicy:
    retry = options.get("retry")
    if retry is None:
        retry = app.conf.task_publish_retry
    if not retry:
        return NO_RETRY
    policy = options.get("retry_policy")
    if policy is None:
        return app.conf.task_publish_retry_policy
    return policy if isinstance(policy, RetryPolicy) else RetryPolicy.from_mapping(policy)


def prepare(app: App, name: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
            options: Mapping[str, Any], task: Task[Any, Any] | None = None,
            reply_to: str | None = None) -> PreparedCall:
    """Resolve options and build the message; raise ImproperlyConfigured on bad input."""
    _check_options(options)
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"task name must be a non-empty string: {name!r}")
    opts = merge_options(app, name, args, kwargs, options, task)
    conf = app.conf
    now = app.clock.time()
    task_id = str(opts.get("task_id") or new_id())
    route = _route(app, opts)
    ignore_result = bool(opts.get("ignore_result", conf.task_ignore_result))
    priority = opts.get("priority")
    message = build(
        app.codecs,
        task_name=name,
        task_id=task_id,
        args=args,
        kwargs=kwargs,
        embed=Embed(
            callbacks=_signatures(opts.get("link"), app),
            errbacks=_signatures(opts.get("link_error"), app),
            chain=list(opts.get("chain") or []),
        ),
        serializer=opts.get("serializer") or conf.task_serializer,
        compression=opts.get("compression") or conf.task_compression,
        eta=(eta := resolve_eta(opts.get("countdown"), opts.get("eta"), now)),
        expires=resolve_expires(opts.get("expires"), now),
        root_id=opts.get("root_id"),
        parent_id=opts.get("parent_id"),
        group_id=opts.get("group_id"),
        group_index=opts.get("group_index"),
        retries=int(opts.get("retries") or 0),
        time_limit=(opts.get("time_limit"), opts.get("soft_time_limit")),
        ignore_result=ignore_result,
        reply_to=reply_to,
        priority=resolve_priority(conf.task_default_priority if priority is None else priority),
        shadow=opts.get("shadow"),
        extra_headers=opts.get("headers"),
    )
    return PreparedCall(task_id, Outgoing(message, route, eta), _policy(app, opts),
                        ignore_result)


#: The inputs of the last route made, and the route: calls in a row mostly go the same way.
_last_route: tuple[tuple[Any, ...], Route] | None = None


def _route(app: App, opts: Mapping[str, Any]) -> Route:
    global _last_route
    conf = app.conf
    # Every input is in the key, so a settings change (task_queues is always a new tuple)
    # misses; comparing the tuple is by identity first, so an unchanged task_queues is free.
    key = (opts.get("queue"), opts.get("exchange") or conf.task_default_exchange,
           opts.get("routing_key") or conf.task_default_routing_key, opts.get("exchange_type"),
           conf.task_queues, conf.task_default_queue)
    last = _last_route
    if last is not None and last[0] == key:
        return last[1]
    queue, exchange, routing_key, exchange_type, queues, default_queue = key
    route = make_route(queue=queue, exchange=exchange, routing_key=routing_key,
                       exchange_type=exchange_type, queues=queues, default_queue=default_queue)
    _last_route = (key, route)
    return route


def _ignores_result(app: App, options: Mapping[str, Any], task: Task[Any, Any] | None) -> bool:
    ignore = options.get("ignore_result")
    if ignore is None:
        ignore = task.ignore_result if task is not None else app.conf.task_ignore_result
    return bool(ignore)


def _publish_once(target: Producer, items: Sequence[Outgoing]) -> Awaitable[None]:
    if len(items) == 1:
        item = items[0]
        return target.publish(item.message, item.route, eta=item.eta)
    return target.publish_many(items)


async def publish(app: App, items: Sequence[Outgoing], policy: RetryPolicy,
                  producer: Producer | None = None) -> None:
    """Publish with the retry policy; OperationalError once retries are exhausted."""
    target = producer if producer is not None else app.broker
    try:
        await _publish_once(target, items)
    except TransportError as exc:
        # Real time, not the app clock: these waits are for a connection to come back.
        await retry_after(exc, functools.partial(_publish_once, target, items), policy,
                          asyncio.sleep)


async def send(app: App, name: str, args: Sequence[Any] | None,
               kwargs: Mapping[str, Any] | None, options: Mapping[str, Any],
               task: Task[Any, Any] | None = None) -> AsyncResult[Any]:
    """Send one task message; return its AsyncResult."""
    options = dict(options)
    producer = options.pop("producer", None)
    task_id = options.setdefault("task_id", None) or new_id()
    options["task_id"] = task_id
    reply_to = (None if _ignores_result(app, options, task)
                else await app.backend.on_task_call(task_id))
    call = prepare(app, name, args, kwargs, options, task, reply_to)
    await publish(app, [call.outgoing], call.policy, producer)
    return AsyncResult(call.task_id, app, task_name=name)


async def send_group(app: App, signatures: Sequence[Signature[Any]], args: Sequence[Any],
                     kwargs: Mapping[str, Any], options: Mapping[str, Any]) -> GroupResult:
    """Send every member of a group in one batch; the GroupResult keeps their order."""
    options = dict(options)
    producer = options.pop("producer", None)
    group_id = str(options.pop("group_id", None) or new_id())
    calls = []
    for index, sig in enumerate(signatures):
        merged = {**sig.options, **options, "group_id": group_id, "group_index": index}
        merged["task_id"] = merged.get("task_id") or new_id()
        task = app.tasks.get(sig.task)
        reply_to = (None if _ignores_result(app, merged, task)
                    else await app.backend.on_task_call(merged["task_id"]))
        call_args = sig.args if sig.immutable else (*args, *sig.args)
        calls.append(prepare(app, sig.task, call_args, {**sig.kwargs, **kwargs}, merged, task,
                             reply_to))
    policy = calls[0].policy
    await publish(app, [c.outgoing for c in calls], policy, producer)
    results = [AsyncResult[Any](c.task_id, app, task_name=s.task)
               for c, s in zip(calls, signatures, strict=True)]
    return GroupResult(group_id, results, app)


async def send_chain(app: App, signatures: Sequence[Signature[Any]], args: Sequence[Any],
                     kwargs: Mapping[str, Any], options: Mapping[str, Any]) -> AsyncResult[Any]:
    """Send the first task; the rest ride in its message (reversed, as Celery does) and each
    worker sends the next with the result prepended."""
    frozen = [sig.clone() for sig in signatures]
    ids = [sig.freeze() for sig in frozen]
    root_id = ids[0]
    for sig in frozen[1:]:
        sig.options.setdefault("root_id", root_id)
    first, rest = frozen[0], frozen[1:]
    chain_embed = [sig.as_dict() for sig in reversed(rest)]
    await first.apply_async(args, kwargs, chain=chain_embed, root_id=root_id, **options)
    parent: AsyncResult[Any] | None = None
    for sig, task_id in zip(frozen, ids, strict=True):
        parent = AsyncResult(task_id, app, task_name=sig.task, parent=parent)
    assert parent is not None
    return parent

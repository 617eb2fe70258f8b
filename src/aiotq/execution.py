"""Running one delivered message: decode, check, run the task, store, follow up, settle.

The worker (worker.py) decides *when* a delivery runs; this module decides *what* happens to
it. Every outcome ends in exactly one settlement of the delivery: ack, dead_letter or
release. Nothing here lets an exception escape into the worker loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback as tb
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import states
from .broker.base import Delivery
from .calling import send
from .canvas import Signature
from .exceptions import AiotqError, MessageError, NotRegistered, Reject, Retry, TaskRevokedError
from .message import Body, decode_body, validate
from .task import Request, Task, current_app, current_request

if TYPE_CHECKING:
    from .app import App

logger = logging.getLogger("aiotq.worker")


class TimeLimitExceeded(AiotqError):
    """An ``async def`` task ran past its hard ``time_limit``."""


@dataclass(slots=True)
class Job:
    """A delivery whose message was decoded and whose task is known."""

    delivery: Delivery
    task: Task[Any, Any]
    body: Body
    request: Request


def check(delivery: Delivery, max_deliveries: int) -> str | None:
    """Why this delivery must be dead-lettered before anything else, or None."""
    try:
        validate(delivery.message)
    except MessageError as exc:
        return f"malformed message: {exc}"
    if delivery.delivery_count > max_deliveries:
        return (f"poison message: delivered {delivery.delivery_count} times "
                f"(max_deliveries={max_deliveries})")
    return None


def task_id_of(delivery: Delivery) -> str | None:
    task_id = delivery.message.headers.get("id") if isinstance(
        delivery.message.headers, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


class Executor:
    """Runs jobs for one worker: thread pool for ``def`` tasks, accepted content, limits."""

    def __init__(self, app: App, threads: int, hostname: str) -> None:
        self.app = app
        self.hostname = hostname
        self._accept_names: tuple[str, ...] = ()
        self._accept: frozenset[str] = frozenset()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aiotq-task")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- settling without running --

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter with one log line, and a FAILURE result where the id is known."""
        task_id = task_id_of(delivery)
        logger.error("dead-lettered message %s from %s: %s", task_id or "(no id)",
                     delivery.queue, reason)
        if task_id is not None:
            await self._store_quietly(task_id, states.FAILURE, MessageError(reason),
                                      delivery.message.reply_to, traceback=None)
        await delivery.dead_letter(reason)

    async def _store_quietly(self, task_id: str, state: str, result: Any,
                             reply_to: str | None, traceback: str | None,
                             name: str | None = None, children: Sequence[str] = ()) -> None:
        try:
            await self.app.store_state(task_id, state, result, name=name, traceback=traceback,
                                       children=children, reply_to=reply_to)
        except Exception:
            logger.exception("could not store state %s of task %s", state, task_id)

    # -- decoding --

    @property
    def accept(self) -> frozenset[str]:
        """Content types of ``accept_content`` (recomputed when the setting changes)."""
        names = self.app.conf.accept_content
        if names is not self._accept_names:
            self._accept_names, self._accept = names, self.app.codecs.content_types(names)
        return self._accept

    def decode(self, delivery: Delivery) -> Job:
        """Raise MessageError / NotRegistered / DecodeError / ContentDisallowed when it can't."""
        message = delivery.message
        task = self.app.tasks.get(message.task_name)
        if task is None:
            raise NotRegistered(message.task_name)
        body = decode_body(self.app.codecs, message, self.accept, self.app.conf.message_max_size)
        if body.embed.chord:
            # Running it without its chord would never call the chord's body: refuse it.
            raise MessageError("chords are not supported (a chord member from Celery?)")
        headers = message.headers
        request = Request(
            id=message.task_id, task=task.name, args=tuple(body.args), kwargs=body.kwargs,
            retries=int(headers.get("retries") or 0), eta=message.eta, expires=message.expires,
            root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
            group=headers.get("group"), group_index=headers.get("group_index"),
            correlation_id=message.correlation_id, reply_to=message.reply_to,
            origin=headers.get("origin"), ignore_result=bool(headers.get("ignore_result")),
            delivery_info={"queue": delivery.queue, "priority": message.priority,
                           "delivery_count": delivery.delivery_count},
            headers=headers, callbacks=body.embed.callbacks, errbacks=body.embed.errbacks,
            chain=body.embed.chain, called_directly=False, loop=asyncio.get_running_loop(),
        )
        return Job(delivery, task, body, request)

    # -- the whole life of one delivery --

    async def handle(self, delivery: Delivery) -> None:
        try:
            job = self.decode(delivery)
        except AiotqError as exc:
            await self.dead_letter(delivery, str(exc) or type(exc).__name__)
            return
        expires = job.request.expires
        if expires is not None and expires.timestamp() <= self.app.clock.time():
            await self.revoke(job, f"expired at {expires.isoformat()}")
            return
        if not job.task.acks_late:
            await delivery.ack()
        try:
            await self.run(job)
        except asyncio.CancelledError:
            if job.task.acks_late:
                await asyncio.shield(delivery.release())
            raise

    async def revoke(self, job: Job, reason: str) -> None:
        logger.warning("task %s[%s] not run: %s", job.task.name, job.request.id, reason)
        await self._store_quietly(str(job.request.id), states.REVOKED, TaskRevokedError(reason),
                                  job.request.reply_to, traceback=None, name=job.task.name)
        await job.delivery.ack()

    async def run(self, job: Job) -> None:
        request, task = job.request, job.task
        store = not (request.ignore_result or task.ignore_result)
        if task.track_started and store:
            await self._store_quietly(str(request.id), states.STARTED, {"hostname": self.hostname},
                                      request.reply_to, traceback=None, name=task.name)
        started = time.perf_counter()
        try:
            result = await self.call(job)
        except Retry as retry:
            await self.retry(job, retry)
        except Reject as reject:
            await self.reject(job, reject)
            return
        except Exception as exc:
            await self.fail(job, exc, time.perf_counter() - started, store)
        else:
            await self.succeed(job, result, time.perf_counter() - started, store)
        if task.acks_late:
            await job.delivery.ack()

    async def call(self, job: Job) -> Any:
        request, task = job.request, job.task
        token_request = current_request.set(request)
        token_app = current_app.set(self.app)
        try:
            hard_limit = _hard_limit(request.headers, task)
            if task.is_async and hard_limit is None:
                return await task.run(*request.args, **request.kwargs)
            if task.is_async:
                try:
                    async with asyncio.timeout(hard_limit):
                        return await task.run(*request.args, **request.kwargs)
                except TimeoutError as exc:
                    raise TimeLimitExceeded(f"hard time limit {hard_limit}s exceeded") from exc
            context = contextvars.copy_context()
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: context.run(task.run, *request.args, **request.kwargs)
            )
        finally:
            current_app.reset(token_app)
            current_request.reset(token_request)

    # -- outcomes --

    async def succeed(self, job: Job, result: Any, runtime: float, store: bool) -> None:
        request = job.request
        followers = self._followers(job, result)
        if logger.isEnabledFor(logging.INFO):
            logger.info("task %s[%s] succeeded in %.4fs: %r", job.task.name, request.id,
                        runtime, result)
        if store:
            await self._store_quietly(str(request.id), states.SUCCESS, result, request.reply_to,
                                      traceback=None, name=job.task.name,
                                      children=[str(sig.id) for sig, _ in followers])
        await self._send_followers(job, followers)

    def _followers(self, job: Job, result: Any) -> list[tuple[Signature[Any], dict[str, Any]]]:
        """Callbacks (result prepended) and the chain's next step, with frozen ids."""
        out: list[tuple[Signature[Any], dict[str, Any]]] = []
        for item in job.request.callbacks:
            sig = Signature.from_dict(item, self.app).with_partial(result)
            sig.freeze()
            out.append((sig, {}))
        if job.request.chain:
            *rest, nxt = job.request.chain
            sig = Signature.from_dict(nxt, self.app).with_partial(result)
            sig.freeze()
            out.append((sig, {"chain": rest}))
        return out

    async def _send_followers(self, job: Job,
                              followers: Sequence[tuple[Signature[Any], dict[str, Any]]]) -> None:
        request = job.request
        for sig, extra in followers:
            try:
                await sig.apply_async(parent_id=request.id,
                                      root_id=request.root_id or request.id, **extra)
            except Exception:
                logger.exception("task %s[%s]: could not send %r", job.task.name, request.id,
                                 sig)

    async def fail(self, job: Job, exc: BaseException, runtime: float, store: bool) -> None:
        request = job.request
        trace = "".join(tb.format_exception(exc))
        logger.error("task %s[%s] raised %r after %.4fs", job.task.name, request.id, exc,
                     runtime)
        if store:
            await self._store_quietly(str(request.id), states.FAILURE, exc, request.reply_to,
                                      traceback=trace, name=job.task.name)
        errbacks = [Signature.from_dict(item, self.app).with_partial(request.id)
                    for item in request.errbacks]
        await self._send_followers(job, [(sig, {}) for sig in errbacks])

    async def retry(self, job: Job, retry: Retry) -> None:
        request, message = job.request, job.delivery.message
        args = retry.options.pop("args", None)
        kwargs = retry.options.pop("kwargs", None)
        options: dict[str, Any] = {
            "task_id": request.id, "retries": request.retries + 1,
            "countdown": max(0.0, retry.when or 0.0), "expires": request.expires,
            "link": request.callbacks, "link_error": request.errbacks, "chain": request.chain,
            "root_id": request.root_id, "parent_id": request.parent_id,
            "group_id": request.group, "group_index": request.group_index,
            "queue": job.delivery.queue, "priority": message.priority,
            "serializer": self.app.codecs.name_for(message.content_type),
            "compression": message.headers.get("compression"),
            "ignore_result": request.ignore_result,
            **retry.options,
        }
        logger.info("task %s[%s] retry %d in %ss: %s", job.task.name, request.id,
                    request.retries + 1, options["countdown"], retry.exc or retry)
        await send(self.app, job.task.name, request.args if args is None else args,
                   request.kwargs if kwargs is None else kwargs, options, task=job.task)
        if not request.ignore_result:
            await self._store_quietly(str(request.id), states.RETRY, retry.exc or retry,
                                      request.reply_to, traceback=None, name=job.task.name)

    async def reject(self, job: Job, reject: Reject) -> None:
        if reject.requeue:
            await job.delivery.release()
        else:
            await self.dead_letter(job.delivery, f"rejected by the task: {reject.reason}")


def _hard_limit(headers: dict[str, Any], task: Task[Any, Any]) -> float | None:
    limits = headers.get("timelimit") or [None, None]
    hard = limits[0] if isinstance(limits, list | tuple) and limits else None
    value = hard if hard is not None else task.options.get("time_limit")
    return float(value) if value is not None else None
